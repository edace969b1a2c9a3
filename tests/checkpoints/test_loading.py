"""pipeline.checkpoints.loading: the pread load gives exactly what transformers' own mmap load gives."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.checkpoints import loading

pytest.importorskip("bitsandbytes")


def test_pread_load_saves_the_same_bnb_checkpoint_as_from_pretrained(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=["lm_head"],
    )
    kwargs = {"quantization_config": bnb, "dtype": torch.bfloat16, "device_map": "cpu"}
    AutoModelForCausalLM.from_pretrained(tiny_model, **kwargs).save_pretrained(tmp_path / "mmap")
    model = loading.from_pretrained_pread(tiny_model, **kwargs)
    assert type(model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    model.save_pretrained(tmp_path / "pread")
    for name in ("model.safetensors", "config.json", "generation_config.json"):
        mmap, pread = (tmp_path / "mmap" / name).read_bytes(), (tmp_path / "pread" / name).read_bytes()
        assert mmap == pread, (name, json.loads(mmap) if name.endswith(".json") else len(mmap))
