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


_PEAK = """
import hashlib, sys, torch
from pathlib import Path
from pipeline.checkpoints import loading
from transformers import AutoModelForCausalLM
path = Path(sys.argv[1])
if sys.argv[2] == "sequential-pread":
    model = loading.from_pretrained_pread(path, sequential=True, dtype=torch.bfloat16, device_map="cpu")
else:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map="cpu")
digest = hashlib.sha256()
for name, p in sorted(model.state_dict().items()):
    digest.update(name.encode()); digest.update(p.contiguous().view(torch.uint8).numpy().tobytes())
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a big pytest process reports the parent's peak
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) * 1024, digest.hexdigest())
"""


def test_sequential_pread_loads_the_same_moe_model_without_holding_every_expert_twice(tmp_path):
    """transformers stacks a MoE checkpoint's per-expert tensors at load; its default loader reads every
    tensor ahead, so all experts are held twice at the peak. The sequential pread load holds one layer's."""
    import subprocess
    import sys

    from tests.conftest import cli

    model = tmp_path / "moe"
    proc = cli(
        "-q", "twin", "qwen3-30b-a3b", "--layers", "2", "--vocab", "49152", "--experts", "32", "--out", str(model)
    )
    assert proc.returncode == 0, proc.stderr
    experts = sum(p.stat().st_size for p in model.glob("*.safetensors")) - 2 * 49152 * 2048 * 2  # minus embeddings
    peak, digest = {}, {}
    for how in ("default", "sequential-pread"):
        out = subprocess.run([sys.executable, "-c", _PEAK, str(model), how], capture_output=True, text=True, check=True)
        peak[how], digest[how] = out.stdout.split()[-2:]
    assert digest["default"] == digest["sequential-pread"]  # the same weights, bit for bit
    saved = int(peak["default"]) - int(peak["sequential-pread"])
    assert saved > 0.4 * experts, (peak, experts)  # of the two layers' experts, at most one layer's held twice
