"""GGUF conversion stage: the HF checkpoint to one F16/BF16 GGUF with llama.cpp's own converter.

Done once per run and shared by every GGUF type (and the importance matrix). The converter writes the
tokenizer and the chat template into the GGUF, so llama-server and Ollama need no extra flags."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from pipeline.stage_id import SOURCE
from pipeline.tools import llamacpp_toolchain
from pipeline.tools.processes import run_logged

VERSION = 2  # 2: general.name from the source, not the stage directory


def model_name(source: Path) -> str:
    """A readable model name for the GGUF metadata (general.name), from what the source stage recorded."""
    try:
        info = json.loads((source / "stage_info.json").read_text())
    except (OSError, ValueError):
        info = {}
    if info.get("repo"):
        return info["repo"].split("/")[-1]
    if info.get("gguf"):
        return re.sub(r"[.-](I?Q\d\w*|F16|BF16|F32)$", "", Path(info["gguf"]).stem, flags=re.IGNORECASE)
    return Path(info.get("path") or source).name


def output(stage_dir: Path) -> Path:
    return next(stage_dir.glob("*.gguf"))


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    return convert(inputs[SOURCE], config["outtype"], out, ctx)


def convert(source: Path, outtype: str, out: Path, ctx: Any) -> dict[str, Any]:
    chain = llamacpp_toolchain.require()
    target = out / f"model-{outtype.upper()}.gguf"
    ctx.status(f"converting to {outtype.upper()} GGUF with llama.cpp's converter")
    count = 0

    def progress(line: str) -> None:
        nonlocal count
        if re.search(r"-->\s*\w+, shape", line):  # one line per tensor written
            count += 1
            ctx.status(f"converting to {outtype.upper()} GGUF: {count} tensors")

    # NO_LOCAL_GGUF unset: the converter puts its own gguf-py first on sys.path (PyPI's is too old for it).
    run_logged(
        [
            sys.executable,
            chain.converter,
            source,
            "--outfile",
            target,
            "--outtype",
            outtype,
            "--model-name",
            model_name(source),
        ],
        on_line=progress,
    )
    return {
        "file": target.name,
        "outtype": outtype,
        "tensors": count,
        "size_bytes": target.stat().st_size,
        "llama_cpp_python_source": llamacpp_toolchain.VERSION,
    }
