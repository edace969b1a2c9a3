"""`always_active`: in a mixture of experts, the tensors every token computes with (attention, shared
experts, dense layers) kept at 8 bits (or bf16) while the routed experts go lower, in GGUF and in
compressed-tensors. The MoE twin's sizes and KLDs beside the uniform mix: tests/backends/test_moe.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.backends.gguf import GgufOptions
from pipeline.backends.llmcompressor import GptqOptions, modifiers
from pipeline.checkpoints.decompressed import _group_of
from pipeline.devtools import moe_families
from pipeline.errors import RecipeError
from tests.conftest import tiny_recipe, write_recipe


def test_names_and_what_cannot_be_asked():
    assert GgufOptions(format="gguf", type="Q4_K_M", always_active="Q8_0").artifact == "gguf-q4_k_m-active-q8_0"
    assert GptqOptions(format="gptq", always_active="w8a16").artifact == "gptq-active-w8a16"
    with pytest.raises(ValidationError, match="type: auto already chooses"):
        GgufOptions(format="gguf", type="auto", like="Q4_K_M", always_active="Q8_0")


def test_a_dense_model_is_refused_at_plan(tiny_model, tmp_path):
    from pipeline import api

    for fmt in (
        {"format": "gptq", "group_size": 64, "always_active": "w8a16"},
        {"format": "gguf", "type": "Q4_K_M", "always_active": "Q8_0"},
    ):
        recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [fmt]))
        with pytest.raises(RecipeError, match=r"formats\[0\]\.always_active: a dense model"):
            api.plan(recipe, tmp_path / "runs")


def test_the_always_active_group_outranks_the_experts_group():
    """compressed-tensors gives a module the scheme of its most specific target (exact name, regex, class):
    the always-active regexes win over group_0's `Linear`, and the dense decompression agrees."""
    from compressed_tensors.quantization import QuantizationScheme

    quantizer = next(
        m for m in modifiers(GptqOptions(format="gptq", always_active="w8a16")) if hasattr(m, "config_groups")
    )
    groups = {name: QuantizationScheme.model_validate(g) for name, g in quantizer.config_groups.items()}
    assert groups["group_0"].weights.num_bits == 4 and groups["group_1"].weights.num_bits == 8
    schemes = [(scheme, name) for name, scheme in groups.items()]
    for module, bits in (
        ("model.layers.1.self_attn.q_proj", 8),
        ("model.layers.1.mlp.shared_expert.down_proj", 8),
        ("model.layers.0.mlp.gate_proj", 8),  # a dense layer's MLP
        ("model.layers.1.mlp.experts.3.gate_proj", 4),
    ):
        scheme, _ = _group_of(module, schemes, Path("x"))
        assert scheme.weights.num_bits == bits, module


def test_compressed_tensors_always_active_loads_and_keeps_attention_at_int8(tmp_path):
    """Qwen2-MoE (attention, a shared expert and routed experts): GPTQ W4A16 with always_active: w8a16 is
    one checkpoint of two schemes, which transformers loads (through the dense evaluation copy)."""
    from pipeline import api

    model = moe_families.build("qwen2_moe", tmp_path / "model", tokenizer_cache=tmp_path / "tok")
    body = tiny_recipe(model, [{"format": "gptq", "group_size": 32, "always_active": "w8a16"}], name="aa")
    body |= {"calibration": moe_families.CALIBRATION, "evaluation": moe_families.EVALUATION}
    result = api.run(write_recipe(tmp_path / "r.yaml", body), tmp_path / "runs")
    assert result.status == "ok", result.failures
    config = json.loads((result.artifacts["gptq-active-w8a16"] / "config.json").read_text())["quantization_config"]
    assert sorted(g["weights"]["num_bits"] for g in config["config_groups"].values()) == [4, 8]
    assert result.metrics["gptq-active-w8a16"]["kld"] is not None
