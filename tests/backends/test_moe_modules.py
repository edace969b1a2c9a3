"""Routers found from a loaded MoE model's structure (beside llm-compressor's linearized experts, one row
per expert), whatever the family calls them."""

from __future__ import annotations

import pytest

from pipeline.backends.moe_modules import routers
from pipeline.devtools.moe_families import configs

EXPECTED = {
    "qwen3_moe": ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"],
    "mixtral": ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"],
    "deepseek_v3": ["model.layers.1.mlp.gate"],  # layer 0 is dense: no router
    "gpt_oss": ["model.layers.0.mlp.router", "model.layers.1.mlp.router"],
    "granitemoe": ["model.layers.0.block_sparse_moe.router", "model.layers.1.block_sparse_moe.router"],
}


@pytest.mark.parametrize("family", list(EXPECTED))
def test_routers_are_found_beside_the_linearized_experts(family):
    from llmcompressor.modeling.moe.linear_experts import LinearExperts2D
    from llmcompressor.modeling.moe.linearize import get_non_linearized_moes
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(configs(256)[family]())
    assert routers(model, 4) == []  # fused experts: no container of 4 Linears yet
    for name, fused in get_non_linearized_moes(model):  # what the quantize worker does before calibrating
        converter = LinearExperts2D.get_linear_experts_cls(type(fused))
        model.set_submodule(name, converter.from_experts_module(fused, getattr(fused, "config", model.config)))
    assert routers(model, 4) == EXPECTED[family]
