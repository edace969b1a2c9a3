"""compressed-tensors type: auto without running it: the recipe's budget options, the budget in bytes, the
targets that name exactly the chosen Linears, the sensitivity stage the plan shares, and what plan refuses.
The run on SmolLM2 (KLD, sizes, vLLM): tests/backends/test_ct_auto_run.py."""

from __future__ import annotations

import re

import pytest

from pipeline.backends import FORMATS, ct_auto, ct_sensitivity
from pipeline.engines import ENGINES
from pipeline.recipe import Recipe
from pipeline.stage_id import Kind


def _opts(tiny_model, **fmt):
    recipe = {"name": "t", "model": {"path": str(tiny_model)}, "formats": [fmt]}
    return Recipe.model_validate(recipe).formats[0]


def test_auto_needs_exactly_one_budget(tiny_model):
    for bad in (
        {"format": "awq", "type": "auto"},
        {"format": "awq", "type": "auto", "like": "w4a16", "target_size": "90MB"},
        {"format": "awq", "like": "w4a16"},
        {"format": "gptq", "extra_pct": 10},
        {"format": "gptq", "type": "auto", "target_size": "90MB", "extra_pct": 5},
    ):
        with pytest.raises(ValueError, match="budget|extra_pct"):
            _opts(tiny_model, **bad)


def test_artifact_names_say_the_budget(tiny_model):
    assert _opts(tiny_model, format="awq", type="auto", like="w4a16", extra_pct=10).artifact == "awq-auto-w4a16-10pct"
    assert _opts(tiny_model, format="gptq", type="auto", like="w4a16").artifact == "gptq-auto-w4a16"
    assert _opts(tiny_model, format="gptq", type="auto", target_size="90MB").artifact == "gptq-auto-90mb"
    kv = _opts(tiny_model, format="awq", type="auto", like="w4a16", kv_cache="fp8")
    assert kv.artifact == "awq-auto-w4a16-kv-fp8"


def _sensitivity():
    """Two groups of 1000 weights (g128 asymmetric W4A16, W8A16 per channel, bf16) and 100 fixed bytes."""
    w4, w8, bf = (ct_sensitivity.stored_bytes((10, 100), a) for a in ct_sensitivity.candidates(128, False).values())
    return {
        "weights_bytes": 100 + 2 * 2000,
        "tensors": {
            g: {"kind": "o", "members": [g], "bytes": 2000, "elements": 1000, "types": t}
            for g, t in {
                "a": {"w4a16": {"bytes": w4, "kld": 0.5}, "w8a16": {"bytes": w8, "kld": 0.01}, "bf16": {"bytes": bf}},
                "b": {"w4a16": {"bytes": w4, "kld": 0.1}, "w8a16": {"bytes": w8, "kld": 0.05}, "bf16": {"bytes": bf}},
            }.items()
        },
    }


def test_budget_is_like_plus_the_extra_or_the_target(tiny_model):
    sens = _sensitivity()
    w4 = sens["tensors"]["a"]["types"]["w4a16"]["bytes"]
    like = _opts(tiny_model, format="awq", type="auto", like="w4a16", extra_pct=10)
    assert ct_auto.budget(like, sens) == int((100 + 2 * w4) * 1.10)
    assert ct_auto.budget(_opts(tiny_model, format="awq", type="auto", target_size="1.5MiB"), sens) == 1.5 * 2**20


def test_stored_bytes_counts_packed_weights_scales_and_zero_points():
    w4 = ct_sensitivity.candidates(128, False)["w4a16"]
    # 576 x 1536 at 4 bits, a bf16 scale per 128 weights of a row, a 4-bit zero point beside each scale
    assert ct_sensitivity.stored_bytes((576, 1536), w4) == 576 * 1536 // 2 + 2 * 576 * 12 + 576 * 12 // 2
    w8 = ct_sensitivity.candidates(128, True)["w8a16"]
    assert ct_sensitivity.stored_bytes((576, 1536), w8) == 576 * 1536 + 2 * 576


def test_the_stored_check_reads_schemes_from_the_tensors(tmp_path):
    """ct_auto.check_stored judges the tensors, in the layouts compressed-tensors writes: a float `weight` is bf16,
    an int8 `weight` W8A16, a `weight_packed` 4 or 8 bits by its width over `weight_shape`."""
    import json

    import torch
    from safetensors.torch import save_file

    from pipeline.errors import StageError

    rows, cols = 64, 256
    layer = "model.layers.0"

    def packed(bits: int, groups: int) -> dict[str, torch.Tensor]:
        return {
            "weight_packed": torch.zeros(rows, cols * bits // 32, dtype=torch.int32),
            "weight_shape": torch.tensor([rows, cols]),
            "weight_scale": torch.ones(rows, groups, dtype=torch.bfloat16),
        }

    modules = {
        f"{layer}.self_attn.q_proj": {"weight": torch.zeros(rows, cols, dtype=torch.bfloat16)},
        f"{layer}.self_attn.o_proj": packed(8, 1),
        f"{layer}.mlp.gate_proj": packed(4, cols // 128),
        f"{layer}.mlp.down_proj": {
            "weight": torch.zeros(rows, cols, dtype=torch.int8),
            "weight_scale": torch.ones(rows, 1),
        },
    }
    save_file({f"{m}.{k}": t for m, ts in modules.items() for k, t in ts.items()}, tmp_path / "model.safetensors")
    assert ct_auto.stored_schemes(tmp_path) == dict(zip(modules, ("bf16", "w8a16", "w4a16", "w8a16"), strict=True))
    types = {f"{layer}.qkv": "bf16", f"{layer}.o": "w8a16", f"{layer}.gate_up": "w4a16", f"{layer}.down": "w8a16"}
    choice = {"types": types, "weights_bytes": ct_auto.tensor_bytes(tmp_path)}
    (tmp_path / ct_auto.CHOICE_FILE).write_text(json.dumps(choice))
    assert ct_auto.check_stored(tmp_path)["linears_checked"] == 4
    (tmp_path / ct_auto.CHOICE_FILE).write_text(json.dumps({**choice, "weights_bytes": choice["weights_bytes"] * 2}))
    with pytest.raises(StageError, match="bytes where the choice counted"):
        ct_auto.check_stored(tmp_path)
    (tmp_path / ct_auto.CHOICE_FILE).write_text(json.dumps({**choice, "types": {**types, f"{layer}.o": "w4a16"}}))
    with pytest.raises(StageError, match="o_proj stored as w8a16"):
        ct_auto.check_stored(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(StageError, match="no decoder Linear"):
        ct_auto.check_stored(tmp_path)


def test_targets_name_exactly_the_chosen_linears():
    (pattern,) = ct_auto.targets(["model.layers.1.self_attn.q_proj"])
    assert pattern.startswith("re:")
    assert re.match(pattern[3:], "model.layers.1.self_attn.q_proj")
    assert not re.match(pattern[3:], "model.layers.11.self_attn.q_proj")  # layer 1 must not match layer 11


def test_fused_linears_form_one_group():
    assert ct_sensitivity.group_of("model.layers.3.self_attn.k_proj") == ("model.layers.3.qkv", "qkv")
    assert ct_sensitivity.group_of("model.layers.3.mlp.up_proj") == ("model.layers.3.gate_up", "gate_up")
    assert ct_sensitivity.group_of("model.layers.3.mlp.down_proj") == ("model.layers.3.down", "down")
    assert ct_sensitivity.group_of("lm_head") is None


def test_one_sensitivity_stage_per_distinct_four_bit_scheme(tiny_model):
    backend = FORMATS["awq"].backend
    a = backend.shared_steps(_opts(tiny_model, format="awq", type="auto", like="w4a16", extra_pct=5))
    b = backend.shared_steps(_opts(tiny_model, format="awq", type="auto", target_size="1MB"))
    c = FORMATS["gptq"].backend.shared_steps(_opts(tiny_model, format="gptq", type="auto", like="w4a16"))
    assert [s.kind for s in a] == [Kind.CT_SENSITIVITY] and a[0].id == b[0].id  # shared by both AWQ budgets
    assert c[0].id != a[0].id  # GPTQ's symmetric 4 bits cost differently from AWQ's asymmetric ones
    assert backend.shared_steps(_opts(tiny_model, format="awq")) == []


def test_plan_refuses_what_auto_cannot_do(tiny_model):
    backend = FORMATS["gptq"].backend
    bits8 = _opts(tiny_model, format="gptq", bits=8, type="auto", like="w4a16")
    assert backend.problems(bits8, {})[0][0] == "type"
    moe_config = {"model_type": "qwen3_moe", "num_experts": 8, "num_experts_per_tok": 2, "hidden_size": 64}
    auto = _opts(tiny_model, format="gptq", type="auto", like="w4a16")
    assert any(f == "type" and "mixture of experts" in m for f, m in backend.problems(auto, moe_config))
    tuned = _opts(tiny_model, format="autoround", type="auto", like="w4a16")
    assert FORMATS["autoround"].backend.problems(tuned, {})[0][0] == "type"


def test_vllm_on_cpu_refuses_auto_that_may_raise_linears_to_w8a16(tiny_model):
    backend, vllm = FORMATS["awq"].backend, ENGINES["vllm"]
    avx512 = ("avx2", "avx512f")
    wide = _opts(tiny_model, format="awq", type="auto", like="w4a16", extra_pct=10)
    assert "8-bit weight-only" in vllm.refuses(backend.scheme(wide), avx512)
    bf16_only = _opts(tiny_model, format="awq", type="auto", like="w4a16", extra_pct=10, upgrades=["bf16"])
    assert vllm.refuses(backend.scheme(bf16_only), avx512) is None
    assert backend.describe(wide).endswith(", auto: w4a16/w8a16/bf16 per layer group at the size of w4a16 +10 %")


def test_awq_keeps_a_balance_layer_bf16_that_its_smooth_layer_feeds(tiny_model, tiny_calibration, tmp_path):
    """auto may leave o_proj (fed by a quantized v_proj) or down_proj (fed by up_proj) in bf16: AWQ must leave
    those layers out of its mappings (llm-compressor 0.14 divides by zero on them) and the rest quantized."""
    import json

    from pipeline.backends import llmcompressor_run
    from pipeline.backends.llmcompressor import modifiers
    from tests.helpers import stage_ctx

    opts = _opts(tiny_model, format="awq", group_size=32, type="auto", like="w4a16", extra_pct=10, n_grid=4)
    kept = ["model.layers.1.self_attn.o_proj", "model.layers.0.mlp.down_proj"]
    out = tmp_path / "out"
    out.mkdir()
    with stage_ctx() as ctx:
        llmcompressor_run.oneshot(modifiers(opts, {"bf16": kept}), tiny_model, tiny_calibration, out, ctx)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert set(kept) <= set(qc["ignore"])
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {f"{m}.weight" for m in kept} <= keys  # stored as they are
    assert "model.layers.0.self_attn.o_proj.weight_packed" in keys  # its neighbours quantized


def test_awq_mappings_leave_out_layers_with_nothing_to_balance():
    import torch
    from llmcompressor.modifiers.transform.awq.dynamic_mappings import get_layer_mappings_from_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.backends.awq_mappings import for_model

    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    names = [n for n, _ in model.named_modules()]
    bf16 = frozenset({"model.layers.1.self_attn.o_proj", "model.layers.2.mlp.down_proj"})

    def smoothed(mappings, kind):
        return {n for m in mappings if kind in m.smooth_layer for n in names if re.match(m.smooth_layer[3:], n)}

    mappings = for_model(model, bf16)
    assert smoothed(mappings, "v_proj") == {"model.layers.0.self_attn.v_proj", "model.layers.2.self_attn.v_proj"}
    assert smoothed(mappings, "up_proj") == {"model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"}
    assert len(smoothed(mappings, "input_layernorm")) == 3  # q/k/v all quantized everywhere: untouched
    assert for_model(model) == list(get_layer_mappings_from_model(model))  # nothing unquantized: upstream's
