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
