"""Quantize stage: hand the source checkpoint to the format's backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.backends import FORMATS, FormatOptions

VERSION = 4  # 2: unquantized parts saved in the source dtype, not float32; 3: data-free schemes through model_free_ptq;
# 4: mixture-of-experts routers left unquantized


def run(opts: FormatOptions, inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    info = FORMATS[opts.format]
    result = info.backend.quantize(opts, inputs, out, ctx)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"format": opts.format, "backend": info.backend.name, "size_bytes": size, **result}
