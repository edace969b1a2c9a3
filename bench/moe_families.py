"""Every mixture-of-experts family users quantize, through the pipeline: a tiny random model of each
(pipeline.devtools.moe_families: transformers' own config classes, 2 layers, 4 experts) to w8a16, awq and
gguf Q4_K_M, each then evaluated (the artifact loaded in transformers or llama.cpp, KLD against the
original). Prints a table: works, refused at plan (the one line plan prints), or failed (the stage and its
error). Random weights: whether an artifact is made and loads, never its quality.

    python bench/moe_families.py [--families mixtral,deepseek_v3] [--workdir /tmp/moe-families] [--markdown]

About 20 s per family on 2 cores; llama.cpp must be built (`python -m pipeline setup llama-cpp`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import api
from pipeline.devtools import moe_families
from pipeline.errors import RecipeError

FORMATS = [{"format": "w8a16"}, {"format": "awq", "n_grid": 4}, {"format": "gguf", "type": "Q4_K_M", "imatrix": "off"}]
GGUF_SHARED = ("gguf-convert[f16]", "floor[llama.cpp]")


def recipe(family: str, model: Path, formats: list[dict]) -> dict:
    return {
        "name": family,
        "model": {"path": str(model)},
        "calibration": moe_families.CALIBRATION,
        "formats": formats,
        "evaluation": moe_families.EVALUATION,
    }


def cells(family: str, work: Path) -> dict[str, str]:
    """format -> "works" | "refused: ..." | "failed: ...": each format planned alone, so one refusal does
    not hide the others; the formats plan accepts then run together."""
    model = work / "models" / family
    if not (model / "config.json").exists():
        moe_families.build(family, model)
    out, accepted = {}, []
    for opts in FORMATS:
        path = work / f"{family}-{opts['format']}.yaml"
        path.write_text(json.dumps(recipe(family, model, [opts])))
        try:
            api.plan(path, work / "runs")
            accepted.append(opts)
        except RecipeError as e:
            out[opts["format"]] = f"refused at plan: {str(e).split(': ', 2)[-1]}"
    if accepted:
        path = work / f"{family}.yaml"
        path.write_text(json.dumps(recipe(family, model, accepted)))
        result = api.run(path, work / "runs")
        for opts in accepted:
            art = opts["format"] if opts["format"] != "gguf" else f"gguf-{opts['type'].lower()}"
            shared = ("source", "calibration", "reference") + (GGUF_SHARED if art.startswith("gguf") else ())
            first = next(((k, v) for k, v in result.failures.items() if f"[{art}]" in k or k in shared), None)
            out[opts["format"]] = "works" if first is None else f"failed: {first[0]}: {first[1].splitlines()[0][:160]}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(moe_families.FAMILIES))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/moe-families"))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = {f: cells(f, args.workdir) for f in args.families.split(",")}
    names = [o["format"] for o in FORMATS]
    if args.markdown:
        print("| family | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
        for family, row in rows.items():
            print(f"| {family} | " + " | ".join(row.get(n, "") for n in names) + " |")
    else:
        for family, row in rows.items():
            for n in names:
                print(f"{family:14} {n:6} {row.get(n, '')}")


if __name__ == "__main__":
    main()
