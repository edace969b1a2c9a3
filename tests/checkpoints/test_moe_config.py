"""Mixture-of-experts facts from a config.json, against the model transformers builds from that config
(meta device): every family is detected, and its expert parameters counted, however its config names and
nests them (DBRX's ffn_config, ERNIE's moe_num_experts and sparse-layer range, DeepSeek's dense first layer,
Llama 4's interleaved layers)."""

from __future__ import annotations

import pytest

from pipeline.checkpoints import moe
from pipeline.devtools.moe_families import FAMILIES, configs, meta_model

EXPERT_MODULES = ("experts", "input_linear", "output_linear")  # Granite keeps its experts in two 3-D Linears


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_detected_and_its_experts_counted(family):
    config = configs(512)[family]()
    as_json = config.to_dict()
    model = meta_model(config)
    in_experts = sum(
        p.numel()
        for name, p in model.named_parameters()
        if any(f".{m}." in f".{name}" for m in EXPERT_MODULES) and "bias" not in name and "shared" not in name
    )
    assert moe.is_moe(as_json) and moe.experts(as_json) == 4
    assert moe.expert_params(as_json) == in_experts, family
    assert moe.per_token(as_json) == (1 if family == "llama4_text" else 2)


def test_a_config_without_an_expert_width_has_no_estimate_rather_than_a_crash():
    # a KeyError, which pipeline.cost.estimate turns into "no estimates: the config lacks a shape" (was StopIteration)
    with pytest.raises(KeyError, match="width"):
        moe.expert_params({"num_experts": 8, "num_hidden_layers": 2, "hidden_size": 64})
