"""What an artifact's tensors are, read from file headers only (no weight is loaded): name, storage type
and bytes of every tensor in its safetensors and GGUF files. From that: which weights a quantized
artifact left in 16/32-bit floats (the card lists them), and the bytes of the routed experts per layer
(the memory each llama.cpp expert-offload option needs).

A tensor counts as quantized when its module carries quantization data beside it (compressed-tensors'
`weight_scale`, bitsandbytes' `absmax`/`SCB`) or its storage type is not a float
(GGUF's K-quants, INT8, FP8); that data itself is not a weight and is not listed."""

from __future__ import annotations

import json
import re
import struct
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from pipeline.checkpoints import gguf_header

FLOATS = {"BF16", "F16", "F32", "F64"}
# Quantization data stored beside a quantized weight (compressed-tensors, bitsandbytes): never a weight itself.
QUANT_DATA = re.compile(
    r"\.(weight_(scale|zero_point|g_idx|shape|global_scale)|input_(scale|global_scale|zero_point)"
    r"|(k|v)_scale|SCB|weight_format|weight\.(absmax|quant_map|nested_absmax|nested_quant_map|quant_state\..*))$"
)
# Routed experts, as the Hub names them (one tensor per expert) and as llama.cpp stacks them.
EXPERT = re.compile(r"\.experts\.\d+\.|_exps\.")
LAYER = re.compile(r"(?:^|\.)(?:layers|blk|h)\.(\d+)\.")
ROLES = (  # (pattern, role) for the card's table, first match wins
    (re.compile(r"(mlp|block_sparse_moe|feed_forward)\.(gate|router)\.weight$|ffn_gate_inp"), "router"),
    (re.compile(r"shared_expert_gate|ffn_gate_inp_shexp"), "shared-expert gate"),
    (re.compile(r"embed_tokens|token_embd|wte"), "token embedding"),
    (re.compile(r"lm_head|^output\.weight$"), "output head"),
    (re.compile(r"norm"), "normalisation"),
    (re.compile(r"bias$"), "bias"),
)


class Tensor(NamedTuple):
    name: str
    dtype: str  # safetensors' dtype (BF16, I32, F8_E4M3) or GGUF's type name (Q4_K, F32)
    numel: int
    nbytes: int


def read(artifact: Path) -> list[Tensor]:
    """Every tensor of the safetensors and GGUF files directly in `artifact` (a directory or one file)."""
    files = [artifact] if artifact.is_file() else sorted(artifact.iterdir())
    out: list[Tensor] = []
    for f in files:
        if f.suffix == ".safetensors":
            out += _safetensors(f)
        elif f.suffix == ".gguf":
            out += _gguf(f)
    return out


def _safetensors(path: Path) -> list[Tensor]:
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    out = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        numel = 1
        for d in t["shape"]:
            numel *= d
        out.append(Tensor(name, t["dtype"], numel, t["data_offsets"][1] - t["data_offsets"][0]))
    return out


def _gguf(path: Path) -> list[Tensor]:
    return [Tensor(t.name, t.type_name, t.n_elements, t.n_bytes) for t in gguf_header.read(path).tensors]


def weights(tensors: list[Tensor]) -> list[Tensor]:
    """The model's own tensors: quantization data (scales, zero points, packed shapes) left out."""
    return [t for t in tensors if not QUANT_DATA.search(t.name)]


def unquantized(tensors: list[Tensor]) -> list[Tensor]:
    """Weights stored as plain floats: a float weight whose module carries no quantization data."""
    quantized_modules = {QUANT_DATA.sub("", t.name) for t in tensors if QUANT_DATA.search(t.name)}
    return [t for t in weights(tensors) if t.dtype in FLOATS and t.name.rsplit(".", 1)[0] not in quantized_modules]


class Group(NamedTuple):
    pattern: str  # the names with layer and expert numbers as `*`
    role: str
    dtype: str
    count: int
    numel: int
    nbytes: int


def grouped(tensors: list[Tensor]) -> list[Group]:
    """Tensors of the same name up to layer/expert numbers and of one type, in first-seen order."""
    groups: dict[tuple[str, str], list[Tensor]] = defaultdict(list)
    for t in tensors:
        groups[(re.sub(r"(?<=\.)\d+(?=\.)", "*", t.name), t.dtype)].append(t)
    return [
        Group(pattern, role(pattern), dtype, len(ts), sum(t.numel for t in ts), sum(t.nbytes for t in ts))
        for (pattern, dtype), ts in groups.items()
    ]


def role(name: str) -> str:
    return next((r for pattern, r in ROLES if pattern.search(name)), "weight")


def expert_bytes_per_layer(tensors: list[Tensor]) -> dict[int, int]:
    """Bytes of the routed experts' tensors (their quantization data included) per layer index."""
    out: dict[int, int] = defaultdict(int)
    for t in tensors:
        layer = LAYER.search(t.name)
        if layer and EXPERT.search(t.name):
            out[int(layer.group(1))] += t.nbytes
    return dict(sorted(out.items()))
