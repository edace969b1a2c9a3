"""Every llmcompressor format on the tiny model: saved as compressed-tensors, reloads, logits close."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.backends import FORMATS
from pipeline.console import StageContext, stage_progress
from pipeline.recipe import Recipe

pytest.importorskip("llmcompressor")

CASES = [
    ({"format": "fp8"}, "float-quantized", {"num_bits": 8, "type": "float", "strategy": "channel"}),
    ({"format": "w8a16"}, "pack-quantized", {"num_bits": 8, "type": "int", "strategy": "channel"}),
    ({"format": "w8a16", "group_size": 32}, "pack-quantized", {"num_bits": 8, "type": "int", "strategy": "group", "group_size": 32}),
]


def _logits(model_dir, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("entry,compression,weights", CASES, ids=lambda c: json.dumps(c) if isinstance(c, dict) else str(c))
def test_quantize_reload_close(tiny_model, tmp_path, entry, compression, weights):
    recipe = Recipe.model_validate({"name": "t", "model": {"path": str(tiny_model)}, "formats": [entry]})
    opts = recipe.formats[0]
    out = tmp_path / "out"
    out.mkdir()
    with stage_progress(quiet=True) as progress:
        ctx = StageContext("quantize", progress, progress.add_task("q"))
        FORMATS[opts.format].backend.quantize(opts, tiny_model, None, out, ctx)

    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"
    assert qc["format"] == compression
    group = next(iter(qc["config_groups"].values()))
    assert {k: group["weights"][k] for k in weights} == weights
    assert "lm_head" in qc["ignore"]

    ids = torch.randint(3, 400, (1, 48), generator=torch.Generator().manual_seed(0))
    base, quant = _logits(tiny_model, ids), _logits(out, ids)
    diff = (base - quant).abs().max().item()
    assert 0 < diff < 0.25 * base.abs().max().item(), diff
