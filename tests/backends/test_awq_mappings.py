"""AWQ on models that mix dense and MoE layers (DeepSeek, GLM-4.5, Llama 4): the architecture's mappings are
split by layer kind, so the dense layers smooth without a router and the MoE layers keep theirs compensated."""

from __future__ import annotations

import re

import pytest

from pipeline.backends.awq_mappings import for_model, split_by_layer_kind
from pipeline.devtools.moe_families import configs, meta_model


def _matching(pattern: str, names: list[str]) -> list[str]:
    return [n for n in names if re.match(pattern.removeprefix("re:"), n)]


@pytest.mark.parametrize("family, groups", [("deepseek_v3", 2), ("glm4_moe", 1)])
def test_a_dense_first_layer_gets_its_own_mapping_and_the_router_stays_balanced(family, groups):
    """DeepSeek-V3's mapping names the dense MLP too: a set per layer kind. GLM-4.5's upstream mapping names
    only the router and the experts (not linearized on the meta device): it is kept to the MoE layer."""
    model = meta_model(configs(512)[family]())
    names = [n for n, _ in model.named_modules()]
    mappings = for_model(model)
    norms = [m for m in mappings if "post_attention_layernorm" in m.smooth_layer]
    assert len(norms) == groups
    for m in norms:
        smoothed = _matching(m.smooth_layer, names)
        assert len(smoothed) == 1  # one norm per set: what llm-compressor's grouping needs
        balanced = {n for b in m.balance_layers for n in _matching(b, names)}
        layer = smoothed[0].split(".")[2]
        assert balanced and all(n.split(".")[2] == layer for n in balanced)
        if layer == "1":
            assert "model.layers.1.mlp.gate" in balanced  # the router reads the smoothed norm: it is scaled too
        else:
            assert {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"} == balanced


def test_a_model_whose_layers_are_alike_keeps_its_mappings():
    model = meta_model(configs(512)["qwen3_moe"]())
    from llmcompressor.modifiers.transform.awq.dynamic_mappings import get_layer_mappings_from_model

    upstream = get_layer_mappings_from_model(model)
    assert split_by_layer_kind(upstream, [n for n, _ in model.named_modules()]) == list(upstream)
