"""The formats of 2026 (issue 44): FP4 (NVFP4, MXFP4), block FP8 and the FP8 KV cache map onto exactly the
schemes compressed-tensors ships, ask for calibration only where a scale is calibrated, and are refused at
plan where the model's widths do not fit them."""

from __future__ import annotations

import pytest

from pipeline.backends import FORMATS
from pipeline.backends.llmcompressor import LlmCompressorBackend, needs_data, scheme
from pipeline.recipe import Recipe

PRESETS = {"nvfp4": "NVFP4", "nvfp4a16": "NVFP4A16", "mxfp4": "MXFP4", "mxfp4a16": "MXFP4A16", "fp8-block": "FP8_BLOCK"}
SMOLLM2 = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3}
LLAMA_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8}


def _opts(**entry):
    return Recipe.model_validate({"name": "t", "model": {"path": "/m"}, "formats": [entry]}).formats[0]


@pytest.mark.parametrize("fmt", sorted(PRESETS))
def test_schemes_are_compressed_tensors_presets(fmt):
    """Written by hand (the recipe schema imports no heavy library), held equal to the library's presets."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    ours = QuantizationScheme.model_validate(scheme(_opts(format=fmt)))
    preset = QuantizationScheme(targets=["Linear"], **PRESET_SCHEMES[PRESETS[fmt]])
    assert ours.model_dump() == preset.model_dump()


def test_observer_reaches_the_fp4_weights_only():
    group = scheme(_opts(format="nvfp4", observer="imatrix_mse"))
    assert group["weights"]["observer"] == "imatrix_mse"
    assert group["input_activations"]["observer"] == "static_minmax"  # the activations' global scale: calibrated


@pytest.mark.parametrize(
    "entry,calibrated",
    [
        ({"format": "nvfp4"}, True),  # the activations' global scales
        ({"format": "nvfp4a16"}, False),
        ({"format": "nvfp4a16", "observer": "mse"}, False),
        ({"format": "nvfp4a16", "observer": "imatrix_mse"}, True),  # E[x²] per input channel
        ({"format": "mxfp4"}, False),  # power-of-two scales at run time
        ({"format": "mxfp4a16"}, False),
        ({"format": "fp8-block"}, False),
        ({"format": "fp8-block", "kv_cache": "fp8"}, True),  # the KV scales
        ({"format": "w8a16", "kv_cache": "fp8"}, True),
        ({"format": "fp8"}, False),
    ],
)
def test_calibration_only_where_a_scale_is_calibrated(entry, calibrated):
    opts = _opts(**entry)
    assert needs_data(opts) is calibrated
    assert FORMATS[opts.format].backend.needs_calibration(opts) is calibrated


def test_kv_cache_names_the_artifact_and_reaches_the_quantizing_modifier():
    pytest.importorskip("llmcompressor")
    from pipeline.backends.llmcompressor import modifiers

    opts = _opts(format="awq", group_size=64, kv_cache="fp8", always_active="w8a16")
    assert opts.artifact == "awq-active-w8a16-kv-fp8"
    awq, rounding = modifiers(opts)
    assert rounding.kv_cache_scheme.num_bits == 8 and rounding.kv_cache_scheme.type == "float"
    assert rounding.kv_cache_scheme.dynamic is False  # calibrated scales, stored as k_scale/v_scale
    assert all(getattr(m, "kv_cache_scheme", None) is None for m in modifiers(_opts(format="awq", group_size=64)))


def test_fp8_block_refused_where_128_blocks_do_not_tile_the_weights():
    problems = LlmCompressorBackend().problems(_opts(format="fp8-block"), SMOLLM2)
    assert [f for f, _ in problems] == ["format"]
    assert "576" in problems[0][1] and "(192)" in problems[0][1] and "use fp8" in problems[0][1]
    assert LlmCompressorBackend().problems(_opts(format="fp8-block"), LLAMA_8B) == []


def test_fp4_groups_must_divide_every_input_width():
    odd = {**LLAMA_8B, "intermediate_size": 14344}  # 14336 + 8: a multiple of neither 16 nor 32
    for fmt in ("nvfp4", "mxfp4a16"):
        problems = LlmCompressorBackend().problems(_opts(format=fmt), odd)
        assert problems and problems[0][0] == "format" and "down_proj" in problems[0][1]
        assert LlmCompressorBackend().problems(_opts(format=fmt), LLAMA_8B) == []
