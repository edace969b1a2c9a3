"""How a stage loads a checkpoint: which dtype it computes in, on which device, and when to offload.

Checkpoints load in their stored dtype (bf16/fp16): an 8B model is 16 GB that way and 32 GB in
float32, more than many machines have. One exception, measured: on a CPU without native bf16,
bf16 matmuls are 5-17x slower than float32, so a model whose float32 copy takes at most
`UPCAST_SHARE` of this machine's RAM (SmolLM2-135M: 0.5 GB) is computed in float32 there.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

UPCAST_SHARE = 1 / 8  # of physical RAM: float32 on CPU only for models that small
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def stored_dtype(checkpoint: Path) -> str:
    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError):
        return "bfloat16"
    name = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    return name if name in BYTES else "bfloat16"


def weight_bytes(checkpoint: Path) -> int:
    return sum(p.stat().st_size for p in checkpoint.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))


def ram_bytes() -> int:
    import psutil

    return psutil.virtual_memory().total


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_choice() -> dict[str, Any]:
    """What decides the device and dtype a model is evaluated in on this machine (part of evaluation
    keys): the device, and the largest model computed in float32 on CPU. No torch import without a GPU
    driver: `plan` stays fast."""
    dev = device() if Path("/proc/driver/nvidia/version").exists() else "cpu"
    return {"device": dev, "float32_max_params": int(ram_bytes() * UPCAST_SHARE / 4)}


def compute_dtype_name(params: int, stored: str, on: str = "cpu") -> str:
    """float32 for small models on CPU, the stored dtype otherwise (see the module docstring)."""
    if on == "cpu" and params * 4 <= ram_bytes() * UPCAST_SHARE:
        return "float32"
    return stored


def compute_dtype(checkpoint: Path, params: int | None = None, on: str = "cpu") -> Any:
    """The torch dtype to load `checkpoint` in. `params` when the files do not tell it (a compressed artifact)."""
    import torch

    stored = stored_dtype(checkpoint)
    if params is None:
        params = weight_bytes(checkpoint) // BYTES[stored]
    return getattr(torch, compute_dtype_name(params, stored, on))


def cpu_budget_bytes() -> int:
    """CPU memory a stage may fill with weights before llm-compressor offloads the rest to disk.

    LLM_PIPELINE_MAX_CPU_MEMORY (e.g. "20GB") overrides it: a smaller machine, or a test of the offload path."""
    given = os.environ.get("LLM_PIPELINE_MAX_CPU_MEMORY")
    if given:
        return parse_size(given)
    import psutil

    return int(psutil.virtual_memory().available * 0.8)


def parse_size(text: str) -> int:
    """'105MB', '4.5GB', '20G', '2GiB', '1000000' -> bytes (KB/MB/GB decimal as disks count; KiB/MiB/GiB binary)."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?)B?\s*", text.upper())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a positive size (e.g. 105MB, 4.5GB, 2GiB)")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** "_KMGT".index(m.group(2) or "_"))


def from_pretrained_pread(
    checkpoint: Path, trust_remote_code: bool = False, sequential: bool = False, **kwargs: Any
) -> Any:
    """`AutoModelForCausalLM.from_pretrained(checkpoint, **kwargs)`, with the safetensors shards read by
    `pread` instead of memory-mapped.

    transformers (5.x) maps every shard and keeps all of them mapped until the whole model is loaded, so
    a load that converts each tensor (bitsandbytes quantizing while it loads) holds the full checkpoint
    in file-backed RSS beside its result: 1.32x the bf16 size on the 8B twin. Read with `pread` (what
    transformers itself uses on Windows), each tensor's bytes live only until they are converted; the
    saved artifact is byte-identical (checked on the 4-layer twin: peak 4.17 GB instead of 5.00 GB).
    Architectures transformers does not know (remote code) and non-safetensors checkpoints take the
    ordinary path.

    `sequential`: transformers' loader otherwise reads every tensor ahead in a thread pool before it converts
    any, so a mixture-of-experts checkpoint (one tensor per expert, stacked into one parameter per layer at
    load) holds every expert twice: 1.61x the bf16 size on a 2-layer Qwen3-MoE twin with mmap, 1.81x with
    pread. Read one conversion at a time (`HF_DEACTIVATE_ASYNC_LOAD`), with pread, it peaks at 1.31x: one
    layer's experts twice, beside ~0.4 GB of torch itself."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=trust_remote_code)
    shards = sorted(checkpoint.glob("*.safetensors"))
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if model_class is None or not shards:
        return AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=trust_remote_code, **kwargs)
    handles = [safe_open(str(p), framework="pt", device="cpu", backend="pread") for p in shards]
    try:
        lazy = {name: h.get_slice(name) for h in handles for name in h.keys()}  # read when transformers asks
        with _env("HF_DEACTIVATE_ASYNC_LOAD", "1" if sequential else None):
            loaded = model_class.from_pretrained(None, config=config, state_dict=lazy, **kwargs)
    finally:
        for h in handles:
            h.__exit__(None, None, None)
    model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, info) with output_loading_info
    generation = checkpoint / "generation_config.json"
    if generation.is_file():  # from_pretrained(None, ...) does not look for it
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(checkpoint)
    # Where from_pretrained(path) would say the model came from: llm-compressor's oneshot reads the config
    # again from there (None would send it to the Hub).
    model.config._name_or_path = model.name_or_path = str(checkpoint)
    return loaded


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    """`name` set to `value` for the block (left as it is for None), then restored."""
    before = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None and before is None:
            os.environ.pop(name, None)
        elif value is not None:
            os.environ[name] = before
