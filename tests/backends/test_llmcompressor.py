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
    (
        {"format": "awq", "group_size": 32},
        "pack-quantized",
        {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "symmetric": False},
        None,
    ),
    (
        {"format": "gptq", "group_size": 32},
        "pack-quantized",
        {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "symmetric": True},
        None,
    ),
    ({"format": "gptq", "bits": 8, "group_size": None}, "pack-quantized", INT8_CH, None),
    # the stronger W4A16 recipes (issue 16) write the same layout
    (
        {"format": "awq", "group_size": 32, "rounding": "gptq", "observer": "imatrix_mse"},
        "pack-quantized",
        {"num_bits": 4, "group_size": 32, "symmetric": False, "observer": "imatrix_mse", "actorder": "static"},
        None,
    ),
    (
        {"format": "gptq", "group_size": 32, "observer": "mse"},
        "pack-quantized",
        {"num_bits": 4, "group_size": 32, "observer": "mse"},
        None,
    ),
    (
        {"format": "autoround", "group_size": 32, "iters": 20},
        "pack-quantized",
        {"num_bits": 4, "type": "int", "group_size": 32, "symmetric": True},
        None,
    ),
    (
        {"format": "w8a8-int8"},
        "int-quantized",
        INT8_CH,
        {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True},
    ),
    (
        {"format": "w8a8-int8", "rounding": "rtn"},
        "int-quantized",
        INT8_CH,
        {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True},
    ),
    (
        {"format": "fp8"},
        "float-quantized",
        {"num_bits": 8, "type": "float", "strategy": "channel"},
        {"type": "float", "dynamic": True},
    ),
    (
        {"format": "fp8", "scheme": "static"},
        "float-quantized",
        {"num_bits": 8, "type": "float"},
        {"type": "float", "strategy": "tensor", "dynamic": False},
    ),
    ({"format": "w8a16"}, "pack-quantized", INT8_CH, None),
    (
        {"format": "w8a16", "group_size": 32},
        "pack-quantized",
        {"num_bits": 8, "type": "int", "strategy": "group", "group_size": 32},
        None,
    ),
]


def _subset(d: dict, keys: dict) -> dict:
    return {k: d.get(k) for k in keys}


@pytest.mark.parametrize(
    "entry,compression,weights,acts",
    CASES,
    ids=lambda c: json.dumps(c, separators=(",", ":")) if isinstance(c, dict) else None,
)
def test_quantize_reload_close(tiny_model, tiny_calibration, tmp_path, entry, compression, weights, acts):
    opts = Recipe.model_validate({"name": "t", "model": {"path": str(tiny_model)}, "formats": [entry]}).formats[0]
    backend = FORMATS[opts.format].backend
    calibration = tiny_calibration if backend.needs_calibration(opts) else None
    assert (calibration is not None) == (
        entry["format"] in ("awq", "gptq", "autoround", "w8a8-int8") or entry.get("scheme") == "static"
    )
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


def test_w8a8_rounds_after_smoothquant_with_gptq_or_round_to_nearest(tiny_model):
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import SmoothQuantModifier

    from pipeline.backends.llmcompressor import modifiers

    def chain(**entry):
        recipe = {"name": "t", "model": {"path": str(tiny_model)}, "formats": [{"format": "w8a8-int8", **entry}]}
        return [type(m) for m in modifiers(Recipe.model_validate(recipe).formats[0])]

    assert chain() == [SmoothQuantModifier, GPTQModifier]
    assert chain(rounding="rtn") == [SmoothQuantModifier, QuantizationModifier]  # no column updates
    assert chain(rounding="rtn", smoothing_strength=None) == [QuantizationModifier]


def test_raw_llmcompressor_recipe(tiny_model, tmp_path):
    """Experts can hand over an llm-compressor recipe YAML as it is."""
    recipe = tmp_path / "lc.yaml"
    recipe.write_text(
        "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      ignore: [lm_head]\n"
        "      config_groups:\n        group_0:\n          targets: [Linear]\n"
        "          weights: {num_bits: 8, type: int, symmetric: true, strategy: channel}\n"
    )
    opts = Recipe.model_validate(
        {
            "name": "t",
            "model": {"path": str(tiny_model)},
            "formats": [{"format": "llmcompressor-recipe", "recipe": str(recipe), "calibration": False}],
        }
    ).formats[0]
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


@pytest.mark.parametrize("entry", [{"format": "w8a16"}, {"format": "fp8"}], ids=["w8a16", "fp8"])
def test_data_free_formats_stream_shards_and_match_oneshot(tiny_model, tmp_path, entry):
    """Data-free schemes go through model_free_ptq (one shard at a time: big models never sit in memory
    whole); its tensors must be exactly what oneshot makes of the whole model."""
    import torch
    from llmcompressor import oneshot
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from pipeline.backends.llmcompressor import modifiers

    opts = Recipe.model_validate({"name": "t", "model": {"path": str(tiny_model)}, "formats": [entry]}).formats[0]
    ours = tmp_path / "ours"
    ours.mkdir()
    with stage_ctx() as ctx:
        info = FORMATS[opts.format].backend.quantize(opts, {"source": tiny_model}, ours, ctx)
    assert info["entrypoint"] == "model_free_ptq"
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    oneshot(model=model, recipe=modifiers(opts))
    model.to(torch.bfloat16).save_pretrained(tmp_path / "oneshot", save_compressed=True)

    def tensors(d):
        files = [safe_open(str(f), "pt") for f in sorted(d.glob("*.safetensors"))]
        return {k: f.get_tensor(k) for f in files for k in f.keys()}

    a, b = tensors(ours), tensors(tmp_path / "oneshot")
    assert a.keys() == b.keys()
    for k in a:  # fp8 tensors compared bit for bit
        x, y = (t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t for t in (a[k], b[k]))
        assert torch.equal(x, y), k
    assert not (ours / ".stage.json").exists() and (ours / "tokenizer.json").exists()


def test_disk_offload_when_the_model_exceeds_the_cpu_budget(tiny_model, tiny_calibration, tmp_path, monkeypatch):
    """llm-compressor's documented path for models larger than RAM (compressed-tensors disk offloading),
    forced here with a 100 KB CPU budget (the tiny model is 0.4 MB in float32): the artifact is the in-memory
    one up to float rounding (the offloaded weights are onloaded per layer), far inside the quantization error."""
    opts = Recipe.model_validate(
        {"name": "t", "model": {"path": str(tiny_model)}, "formats": [{"format": "gptq", "group_size": 32}]}
    ).formats[0]
    backend = FORMATS["gptq"].backend
    outs = {}
    for budget in (None, "100KB"):
        if budget:
            monkeypatch.setenv("LLM_PIPELINE_MAX_CPU_MEMORY", budget)
        outs[budget] = out = tmp_path / f"out-{budget}"
        out.mkdir()
        messages: list[str] = []
        with stage_ctx() as ctx:
            ctx.report = messages.append
            backend.quantize(opts, {"source": tiny_model, "calibration": tiny_calibration}, out, ctx)
        assert any("disk offloading" in m for m in messages) == bool(budget), messages
    ids = probe_ids()
    base, in_memory, offloaded = logits(tiny_model, ids), logits(outs[None], ids), logits(outs["100KB"], ids)
    assert (in_memory - offloaded).abs().max() < 0.1 * (in_memory - base).abs().max()
    assert not list(tmp_path.glob("*.offload-*")), "the offload folder is removed"


def test_moe_experts_linearized_one_block_at_a_time(monkeypatch):
    """oneshot's own `linearize_moe` keeps every fused experts block alive until the last is converted (every
    expert weight twice: 2.05x the checkpoint at 8 Qwen3-30B-A3B layers). Ours converts with the same
    llm-compressor converter, block by block: when block i is converted no earlier fused block is alive, oneshot
    has nothing left to linearize, and the model computes the same logits."""
    import gc
    import weakref

    import torch
    from llmcompressor.modeling.moe.linear_experts import LinearExperts2D
    from llmcompressor.modeling.moe.linearize import get_non_linearized_moes
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from pipeline.backends.llmcompressor_run import _linearized

    torch.manual_seed(0)
    cfg = Qwen3MoeConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_experts=4,
        num_experts_per_tok=2, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    )  # fmt: skip
    model = Qwen3MoeForCausalLM(cfg).eval()
    ids = torch.randint(0, 128, (1, 12))
    with torch.no_grad():
        before = model(ids).logits
    fused = [weakref.ref(m) for _, m in get_non_linearized_moes(model)]
    assert len(fused) == 3
    alive_at_each: list[int] = []
    convert = LinearExperts2D.from_experts_module.__func__

    def spied(cls, experts, config):
        gc.collect()
        alive_at_each.append(sum(r() is not None for r in fused))
        return convert(cls, experts, config)

    monkeypatch.setattr(LinearExperts2D, "from_experts_module", classmethod(spied))
    with stage_ctx() as ctx:
        _linearized(model, ctx)
    gc.collect()
    assert alive_at_each == [3, 2, 1] and all(r() is None for r in fused)
    assert get_non_linearized_moes(model) == []
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before)
