"""Is a file what its name says? Cheap checks that `plan` runs on model files before any heavy work:
a GGUF that is not one or was cut short, a safetensors file with a broken header or missing data,
a JSON config that is not JSON. Each problem is one RecipeError naming the file and the field."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from pipeline.checkpoints import gguf_header
from pipeline.errors import RecipeError
from pipeline.fingerprint import remembered

MAX_HEADER = 100 * 2**20  # safetensors' own limit for the JSON header


def read_json(path: Path, field: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RecipeError(f"{path.name} is not valid JSON ({str(e).splitlines()[0][:120]})", field=field) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path.name} is not a JSON object", field=field)
    return data


def check_json(path: Path, field: str) -> None:
    """read_json's checks, remembered per file: Llama 3's tokenizer.json (9 MB) takes 0.3 s to parse,
    a third of what `plan` may cost."""
    problem = remembered(path, "json-check", _json_problem)
    if problem:
        raise RecipeError(problem, field=field)


def _json_problem(path: Path) -> str | None:
    try:
        read_json(path, "")
    except RecipeError as e:
        return e.message
    return None


def safetensors_header(path: Path, field: str = "") -> tuple[int, dict]:
    """(header length, header) of a safetensors file, read without loading a tensor."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if n is None or n > min(MAX_HEADER, size - 8):
            raise RecipeError(f"{path.name} is not a safetensors file (no valid header)", field=field)
        try:
            return n, json.loads(f.read(n))
        except ValueError:
            raise RecipeError(f"{path.name} is not a safetensors file (its header is not JSON)", field=field) from None


def tensor_bytes(path: Path) -> dict[str, int]:
    """Bytes of each tensor in a safetensors file, from its header."""
    _, header = safetensors_header(path)
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


def check_safetensors(path: Path, field: str) -> None:
    """Header parses, and the file holds every byte the header points at (a cut-off download does not)."""
    size = path.stat().st_size
    n, header = safetensors_header(path, field)
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
    ]
    need = 8 + n + max(ends, default=0)
    if size < need:
        raise RecipeError(f"{path.name} is truncated: {size:,} bytes, its header needs {need:,}", field=field)


def check_gguf(path: Path, field: str) -> None:
    """Magic number, a header whose structure holds, and tensor data that ends inside the file.
    Remembered per file (a multi-GB GGUF is checked once)."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise RecipeError(
                f"{path.name} is not a GGUF file (it does not start with the GGUF magic number)", field=field
            )
    problem = remembered(path, "gguf-check", _gguf_problem)
    if problem:
        raise RecipeError(f"{path.name}: {problem}", field=field)


def _gguf_problem(path: Path) -> str | None:
    try:
        end = gguf_data_end(path)
    except (ValueError, KeyError, struct.error, IndexError) as e:
        return f"not a readable GGUF file ({type(e).__name__}: {str(e)[:120]})"
    size = path.stat().st_size
    return f"truncated: {size:,} bytes, its tensors need {end:,}" if end > size else None


def gguf_data_end(path: Path) -> int:
    """Where the last tensor's data ends, from a walk over the header (pipeline.checkpoints.gguf_header)."""
    return gguf_header.read(path).data_end
