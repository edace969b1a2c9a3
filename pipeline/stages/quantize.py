"""Quantize stage: hand the source checkpoint to the format's backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.backends import FORMATS, FormatOptions
from pipeline.fingerprint import ARGS

VERSION = 4  # 2: unquantized parts saved in the source dtype, not float32; 3: data-free schemes through model_free_ptq;
# 4: mixture-of-experts routers left unquantized


def config(opts: FormatOptions) -> dict[str, Any]:
    """The format's options (its name and gates judge, they do not shape the artifact) and the content of the
    files they name; unkeyed, the options as written."""
    backend = FORMATS[opts.format].backend
    return {
        "version": VERSION,
        "backend": backend.name,
        "options": opts.model_dump(mode="json", exclude={"name", "gates"}),
        "content": backend.content(opts),
        ARGS: {"options": opts.model_dump(mode="json")},
    }


def options(config: dict[str, Any]) -> FormatOptions:
    given = config[ARGS]["options"]
    return FORMATS[given["format"]].options.model_validate(given)


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The files the options name (an llm-compressor recipe, an importance matrix), read afresh."""
    opts = options(config)
    return {"content": FORMATS[opts.format].backend.content(opts)}


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    opts = options(config)
    info = FORMATS[opts.format]
    result = info.backend.quantize(opts, inputs, out, ctx)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"format": opts.format, "backend": info.backend.name, "size_bytes": size, **result}
