"""Every llmcompressor format on the tiny model: compressed-tensors config names the scheme, the
checkpoint reloads on CPU, and its logits are close to, but not the same as, the original's."""

from __future__ import annotations

import json

import pytest

from pipeline.backends import FORMATS
from pipeline.recipe import Recipe
from tests.helpers import logits, probe_ids, stage_ctx

pytest.importorskip("llmcompressor")

INT8_CH = {"num_bits": 8, "type": "int", "strategy": "channel"}
CASES = [
    # (format entry, compressed-tensors format, weight args subset, input activation args subset or None)
    ({"format": "awq", "group_size": 32}, "pack-quantized", {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "symmetric": False}, None),
    ({"format": "gptq", "group_size": 32}, "pack-quantized", {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "symmetric": True}, None),
    ({"format": "gptq", "bits": 8, "group_size": None}, "pack-quantized", INT8_CH, None),
    ({"format": "w8a8-int8"}, "int-quantized", INT8_CH, {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True}),
    ({"format": "fp8"}, "float-quantized", {"num_bits": 8, "type": "float", "strategy": "channel"}, {"type": "float", "dynamic": True}),
    ({"format": "fp8", "scheme": "static"}, "float-quantized", {"num_bits": 8, "type": "float"}, {"type": "float", "strategy": "tensor", "dynamic": False}),
    ({"format": "w8a16"}, "pack-quantized", INT8_CH, None),
    ({"format": "w8a16", "group_size": 32}, "pack-quantized", {"num_bits": 8, "type": "int", "strategy": "group", "group_size": 32}, None),
]


def _subset(d: dict, keys: dict) -> dict:
    return {k: d.get(k) for k in keys}


@pytest.mark.parametrize("entry,compression,weights,acts", CASES, ids=lambda c: json.dumps(c, separators=(",", ":")) if isinstance(c, dict) else None)
def test_quantize_reload_close(tiny_model, tiny_calibration, tmp_path, entry, compression, weights, acts):
    opts = Recipe.model_validate({"name": "t", "model": {"path": str(tiny_model)}, "formats": [entry]}).formats[0]
    backend = FORMATS[opts.format].backend
    calibration = tiny_calibration if backend.needs_calibration(opts) else None
    assert (calibration is not None) == (entry["format"] in ("awq", "gptq", "w8a8-int8") or entry.get("scheme") == "static")
    out = tmp_path / "out"
    out.mkdir()
    with stage_ctx() as ctx:
        backend.quantize(opts, {"source": tiny_model, "calibration": calibration}, out, ctx)

    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == compression
    group = next(iter(qc["config_groups"].values()))
    assert _subset(group["weights"], weights) == weights
    assert (group["input_activations"] is None) if acts is None else _subset(group["input_activations"], acts) == acts
    assert "lm_head" in qc["ignore"]
    assert (out / "tokenizer.json").exists()

    ids = probe_ids()
    base, quant = logits(tiny_model, ids), logits(out, ids)
    diff = (base - quant).abs().max().item()
    assert 0 < diff < 0.3 * base.abs().max().item(), diff


def test_raw_llmcompressor_recipe(tiny_model, tmp_path):
    """Experts can hand over an llm-compressor recipe YAML as it is."""
    recipe = tmp_path / "lc.yaml"
    recipe.write_text(
        "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      ignore: [lm_head]\n"
        "      config_groups:\n        group_0:\n          targets: [Linear]\n"
        "          weights: {num_bits: 8, type: int, symmetric: true, strategy: channel}\n"
    )
    opts = Recipe.model_validate({"name": "t", "model": {"path": str(tiny_model)},
                                  "formats": [{"format": "llmcompressor-recipe", "recipe": str(recipe), "calibration": False}]}).formats[0]
    out = tmp_path / "out"
    out.mkdir()
    with stage_ctx() as ctx:
        FORMATS[opts.format].backend.quantize(opts, {"source": tiny_model}, out, ctx)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert next(iter(qc["config_groups"].values()))["weights"]["num_bits"] == 8


def test_group_size_feasibility_names_layers_and_fits():
    from pipeline.backends.llmcompressor import GptqOptions, LlmCompressorBackend

    smollm2 = {"hidden_size": 576, "intermediate_size": 1536}
    problems = LlmCompressorBackend().problems(GptqOptions(format="gptq", group_size=128), smollm2)
    assert problems and problems[0][0] == "group_size"
    assert "q_proj" in problems[0][1] and "576" in problems[0][1] and "32, 64" in problems[0][1]
    assert LlmCompressorBackend().problems(GptqOptions(format="gptq", group_size=64), smollm2) == []
