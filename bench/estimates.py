"""Estimated against measured, stage by stage, for finished runs (issue 30's acceptance table).

    python bench/estimates.py recipes/smollm2-demo.yaml --workdir runs     # after `pipeline run` of it
    python bench/estimates.py RECIPE --workdir W [--learned] [--markdown]

For each stage of the run's manifest that ran (not cached) it prints the measured seconds and worker
peak RSS (the manifest's own figures: wall time of the stage, wait4 peak of its worker), the cost model's
prior estimate for the same stage computed now from the recipe, the model's config and this machine's
cached micro-benchmark (`--learned`: with this machine's history applied, which for a run already
recorded there is close to a replay, so the default is the prior), and the ratios. A time ratio outside
[0.5, 2] (and more than 2 s off: sub-second stages are not timed to 2x) or a peak ratio outside
[1/1.3, 1.3] is flagged. The load average when the run finished is not
known here: say how quiet the machine was when you quote the figures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.cost import estimate  # noqa: E402
from pipeline.graph.plan import build_plan  # noqa: E402
from pipeline.recipe_loader import load_recipe  # noqa: E402

NOISE_S = 2.0


def rows(recipe: Path, workdir: Path, learned: bool, with_cached: bool = False) -> list[dict]:
    plan = build_plan(load_recipe(recipe), recipe, workdir)
    cost = estimate(plan, every_stage=True, learned=learned)
    if not cost.stages:
        raise SystemExit(f"no estimates: {cost.note}")
    manifest = json.loads((plan.run_dir / "manifest.json").read_text())
    out = []
    for r in manifest["stages"]:
        e = cost.stages.get(r["id"])
        ran = r["status"] == "done" or (with_cached and r["status"] == "cached")
        if not ran or e is None or not r.get("seconds"):
            continue
        peak = r.get("peak_rss_mb")
        out.append(
            {
                "stage": r["id"],
                "s": r["seconds"],
                "est_s": e.seconds,
                "time_ratio": e.seconds / r["seconds"],
                "mb": peak,
                "est_mb": e.peak_rss_mb,
                "peak_ratio": e.peak_rss_mb / peak if peak else None,
            }
        )
    return out


def flag(row: dict) -> str:
    """Out of bounds: time outside 2x (and more than NOISE_S apart: a 0.1 s stage is not timed to 2x),
    peak outside 1.3x."""
    bad = []
    if not 0.5 <= row["time_ratio"] <= 2 and abs(row["est_s"] - row["s"]) > NOISE_S:
        bad.append("time")
    if row["peak_ratio"] is not None and not 1 / 1.3 <= row["peak_ratio"] <= 1.3:
        bad.append("peak")
    return " ".join(f"{b} off" for b in bad)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path("runs"))
    ap.add_argument("--learned", action="store_true", help="apply this machine's history (default: the prior)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument(
        "--with-cached",
        action="store_true",
        help="also the cached stages, with the figures of the run that built them (a run finished in two goes)",
    )
    args = ap.parse_args()
    table = rows(args.recipe, args.workdir, args.learned, args.with_cached)
    head = ["stage", "measured s", "estimated s", "est/measured", "peak MB", "estimated MB", "est/measured", ""]
    lines = [head] + [
        [
            r["stage"],
            f"{r['s']:.1f}",
            f"{r['est_s']:.1f}",
            f"{r['time_ratio']:.2f}",
            f"{r['mb']:.0f}" if r["mb"] else "-",
            f"{r['est_mb']:.0f}",
            f"{r['peak_ratio']:.2f}" if r["peak_ratio"] else "-",
            flag(r),
        ]
        for r in table
    ]
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for line in lines[1:]:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        for line in lines:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    off = [r for r in table if flag(r)]
    total_m, total_e = sum(r["s"] for r in table), sum(r["est_s"] for r in table)
    print(
        f"\n{len(table)} stages; measured {total_m:.0f} s in all, estimated {total_e:.0f} s; {len(off)} out of bounds"
    )


if __name__ == "__main__":
    main()
