"""Every MoE family users quantize (tiny models from transformers' own config classes): what cannot work is
refused at plan in one line naming the family and the format, and the fixes for what crashed after
quantizing hold: AWQ on DeepSeek's dense first layer (router still compensated), PhiMoE's expert names,
ERNIE found to be a mixture of experts. bench/moe_families.py runs the whole table (docs: models.md)."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from pipeline import api
from pipeline.devtools import moe_families
from pipeline.errors import RecipeError
from tests.conftest import llama_cpp_or_skip, write_recipe

# family -> format -> the words its plan refusal must hold (compressed-tensors: transformers cannot load the
# per-expert layout for families that keep their experts fused; PhiMoE: llama.cpp cannot convert it; a
# 2-layer DeepSeek-V2 without a query LoRA: llama.cpp would not load its GGUF)
REFUSED = {
    "gpt_oss": {"w8a16": "gpt_oss", "awq": "gpt_oss"},
    "granitemoe": {"w8a16": "granitemoe", "awq": "granitemoe"},
    "dbrx": {"w8a16": "dbrx", "awq": "dbrx"},
    "llama4_text": {"w8a16": "llama4_text", "awq": "llama4_text"},
    "phimoe": {"gguf": "PhimoeForCausalLM"},
    "deepseek_v2": {"gguf": "q_lora_rank"},  # V2-Lite's layout at a depth llama.cpp does not take for Lite
}
FORMATS = {"w8a16": {"format": "w8a16"}, "awq": {"format": "awq", "n_grid": 4}, "gguf": {"format": "gguf"}}


class Models(dict):
    """family -> its tiny model, built on first use (SmolLM2's tokenizer made once for all)."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, family):
        self[family] = moe_families.build(family, self.root / family, tokenizer_cache=self.root / "tokenizers")
        return self[family]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return Models(tmp_path_factory.mktemp("moe-families"))


def _recipe(tmp_path, family, model, formats):
    body = {
        "name": family,
        "model": {"path": str(model)},
        "calibration": moe_families.CALIBRATION,
        "formats": formats,
        "evaluation": moe_families.EVALUATION,
    }
    return write_recipe(tmp_path / f"{family}.yaml", body)


def test_plan_refuses_in_one_line_what_cannot_work_and_accepts_the_rest(models, tmp_path):
    llama_cpp_or_skip()  # the gguf refusal names what llama.cpp's converter knows
    for family in moe_families.FAMILIES:
        model = models[family]
        for name, opts in FORMATS.items():
            fmt = {**opts, "type": "Q4_K_M"} if name == "gguf" else opts
            recipe = _recipe(tmp_path, f"{family}-{name}", model, [fmt])
            expected = REFUSED.get(family, {}).get(name)
            if expected is None:
                api.plan(recipe, tmp_path / "runs")
                continue
            with pytest.raises(RecipeError) as refused:
                api.plan(recipe, tmp_path / "runs")
            line = str(refused.value)
            assert "\n" not in line and "formats[0].format" in line and expected in line, (family, name, line)


def _tensor(path, name):
    with safe_open(str(next(path.glob("*.safetensors"))), "pt") as f:
        return f.get_tensor(name).float()


def test_awq_on_a_dense_first_layer_keeps_the_router_compensated(models, tmp_path):
    """DeepSeek-V3's layer 0 is dense, layer 1 routed: AWQ used to stop (one smooth layer per mapping). Now
    each layer kind smooths apart, and on the routed layer the router is scaled with the experts, so what
    it computes from the norm's input (router weight x norm weight, column by column) is unchanged."""
    model = models["deepseek_v3"]
    result = api.run(_recipe(tmp_path, "deepseek_v3", model, [FORMATS["awq"]]), tmp_path / "runs")
    assert result.status == "ok", result.failures
    artifact = result.artifacts["awq"]
    norm, router = "model.layers.1.post_attention_layernorm.weight", "model.layers.1.mlp.gate.weight"
    before = _tensor(model, router) * _tensor(model, norm)
    after = _tensor(artifact, router) * _tensor(artifact, norm)
    assert not torch.allclose(_tensor(model, norm), _tensor(artifact, norm), rtol=0.01)  # the norm was smoothed
    assert torch.allclose(before, after, rtol=0.02, atol=1e-3)  # and the router compensated
    assert result.metrics["awq"]["kld"] is not None


@pytest.mark.parametrize("family", ["phimoe", "ernie4_5_moe"])
def test_families_that_crashed_after_quantizing_now_load(models, tmp_path, family):
    """PhiMoE: its checkpoints name experts w1/w3/w2 (read from transformers' loader), which the artifact
    gets back. ERNIE-4.5: `moe_num_experts` is now read, so its artifact is evaluated as a mixture of experts."""
    result = api.run(_recipe(tmp_path, family, models[family], [FORMATS["awq"]]), tmp_path / "runs")
    assert result.status == "ok", result.failures
    assert result.metrics["awq"]["kld"] is not None  # loaded in transformers and measured
    with safe_open(str(next(result.artifacts["awq"].glob("*.safetensors"))), "pt") as f:
        names = list(f.keys())
    if family == "phimoe":
        assert any(".experts.0.w2." in n for n in names) and not any(".experts.0.down_proj." in n for n in names)
