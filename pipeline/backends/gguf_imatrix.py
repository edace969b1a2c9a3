"""Importance-matrix stage: llama.cpp's llama-imatrix over the run's calibration text.

Computed once per run on the F16/BF16 conversion and reused by every GGUF type that asks for it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from pipeline.backends import gguf_convert
from pipeline.data import samples as calibration_samples
from pipeline.errors import StageError
from pipeline.fingerprint import ARGS, file_sha256
from pipeline.stage_id import CALIBRATION
from pipeline.tools import cpus, llamacpp_toolchain
from pipeline.tools.processes import run_logged

VERSION = 4  # 2: context sized from llama.cpp's own token count of the text; 3: no local path recorded;
# 4: tokens per expert in the info
FILE = "imatrix.gguf"
MIN_CTX = 16


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    """The recipe's own matrix file (args["file"]), or one computed over the calibration set."""
    a = config[ARGS]
    if a.get("file"):
        return copy_given(Path(a["file"]), out, ctx)
    return compute(inputs[a["convert"]], inputs[CALIBRATION], out, ctx)


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """A given matrix file's digest, read afresh (the mid-run guard)."""
    given = config[ARGS].get("file")
    return {"sha256": file_sha256(Path(given))} if given else {}


def compute(converted: Path, calibration: Path, out: Path, ctx: Any) -> dict[str, Any]:
    chain = llamacpp_toolchain.require()
    samples = calibration_samples.load(calibration)
    # The calibration text as the model saw it (chat template applied); llama.cpp re-tokenizes it
    # with the GGUF's tokenizer and cuts it into windows of the calibration length.
    text = out / "calibration.txt"
    text.write_text("\n".join(s["text"] for s in samples))
    # llama-imatrix needs at least two chunks of its context, counted in its own tokens: a GGUF tokenizer
    # can cut the text into fewer tokens than transformers did (or there is a single sample), so the
    # context is sized from llama.cpp's count, at most the calibration length.
    tokens = llamacpp_toolchain.count_tokens(gguf_convert.output(converted), text.read_text())
    ctx_len = min(max(len(s["input_ids"]) for s in samples), tokens // 2)
    if ctx_len < MIN_CTX:
        raise StageError(
            f"the calibration text is {tokens} tokens for llama.cpp: too little for an importance matrix "
            f"(at least {2 * MIN_CTX}); raise calibration.samples or seq_len, or use imatrix: off"
        )
    chunks = tokens // ctx_len
    ctx.status(f"importance matrix over {chunks} chunks of {ctx_len} tokens")

    def progress(line: str) -> None:
        done = re.findall(r"\[(\d+)\]", line)
        if done:
            ctx.status(f"importance matrix: chunk {done[-1]}/{chunks}")

    # Run in `out` with bare file names: llama-imatrix records the text's path in the matrix
    # (imatrix.datasets) and llama-quantize copies it into every GGUF; a temp path there would make
    # artifacts differ from run to run and publish the local directory layout.
    run_logged(
        [
            chain.tool("llama-imatrix"),
            "-m",
            gguf_convert.output(converted),
            "-f",
            text.name,
            "-o",
            FILE,
            "-c",
            str(ctx_len),
            "--chunks",
            str(chunks),
            "--parse-special",
            "-t",
            str(cpus.count()),
            "--no-ppl",
        ],
        on_line=progress,
        cwd=out,
    )
    text.unlink()  # the calibration stage keeps the text; no second copy
    info = {"file": FILE, "chunks": chunks, "ctx": ctx_len, "tokens": tokens, "sha256": file_sha256(out / FILE)}
    experts = expert_tokens(out / FILE)
    return {**info, "expert_tokens": experts} if experts else info


def expert_tokens(matrix: Path) -> dict[str, list[int]]:
    """Calibration tokens llama-imatrix saw routed to each expert of each stacked expert tensor
    (`blk.N.ffn_*_exps`: one count per expert), from its own file."""
    from gguf import GGUFReader

    return {
        t.name.removesuffix(".counts"): [int(c) for c in t.data.reshape(-1)]
        for t in GGUFReader(matrix).tensors
        if t.name.endswith("_exps.weight.counts")
    }


def copy_given(path: Path, out: Path, ctx: Any) -> dict[str, Any]:
    """A user-supplied importance matrix, copied into the run so the artifact's inputs stay together."""
    ctx.status(f"using importance matrix {path}")
    target = out / (FILE if path.suffix == ".gguf" else "imatrix.dat")
    shutil.copyfile(path, target)
    return {"file": target.name, "given": str(path), "sha256": file_sha256(target)}


def quantize_args(matrix: Path) -> tuple[list[str], Path]:
    """llama-quantize's `--imatrix` argument and the directory to run it in: the bare file name, which
    it records in the GGUF (quantize.imatrix.file), never a path of this machine."""
    return ["--imatrix", matrix.name], matrix.parent


def output(stage_dir: Path) -> Path:
    return next(p for p in stage_dir.iterdir() if p.name.startswith("imatrix."))
