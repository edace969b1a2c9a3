"""bitsandbytes NF4 and INT8 on the tiny model: saved pre-quantized, reload on CPU, logits close."""

from __future__ import annotations

import json

import pytest

from pipeline.backends import FORMATS
from pipeline.recipe import Recipe
from tests.helpers import logits, probe_ids, stage_ctx

pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize(
    "entry,expected",
    [
        (
            {"format": "bnb-nf4"},
            {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
        ),
        ({"format": "bnb-int8"}, {"load_in_8bit": True, "llm_int8_threshold": 6.0}),
    ],
)
def test_bnb_quantize_reload_close(tiny_model, tmp_path, entry, expected):
    opts = Recipe.model_validate({"name": "t", "model": {"path": str(tiny_model)}, "formats": [entry]}).formats[0]
    out = tmp_path / "out"
    out.mkdir()
    with stage_ctx() as ctx:
        FORMATS[opts.format].backend.quantize(opts, {"source": tiny_model}, out, ctx)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "bitsandbytes"
    assert {k: qc[k] for k in expected} == expected
    ids = probe_ids()
    base, quant = logits(tiny_model, ids), logits(out, ids)
    diff = (base - quant).abs().max().item()
    assert 0 < diff < 0.3 * base.abs().max().item(), diff


def test_a_mixture_of_experts_checkpoint_is_refused_at_quantize_when_plan_could_not_read_it(tmp_path):
    """`plan` refuses bnb for MoE models from config.json; a source whose config it could not read (a Hub model
    offline) is refused by the stage itself, from the checkpoint, before any weight is loaded."""
    from transformers import MixtralConfig

    from pipeline.errors import RecipeError

    source = tmp_path / "source"
    source.mkdir()
    config = MixtralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_local_experts=4)
    (source / "config.json").write_text(config.to_json_string())  # no weights: the refusal must come first
    entry = Recipe.model_validate({"name": "x", "model": {"path": str(tmp_path)}, "formats": [{"format": "bnb-nf4"}]})
    opts = entry.formats[0]
    with stage_ctx() as ctx, pytest.raises(RecipeError, match="mixture-of-experts"):
        FORMATS["bnb-nf4"].backend.quantize(opts, {"source": source}, tmp_path / "out", ctx)
