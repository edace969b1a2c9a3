"""How `plan` shows the cost estimates: a figure per stage in the tree, the run's totals, the machine
they were computed for, and the cheaper choices where one stage dominates (pipeline.cost)."""

from __future__ import annotations

import shutil

from rich.markup import escape

from pipeline.console import human_time
from pipeline.cost.feasibility import alternatives
from pipeline.cost.model import GB, MB, Estimate
from pipeline.files import existing_ancestor


def short(e: Estimate) -> str:
    learned = f", learned from {e.corrected_by}" if e.corrected_by else ""
    wrote = f", writes {e.written_bytes / GB:.2f} GB" if e.written_bytes >= 10 * MB else ""
    if e.scratch_bytes >= 10 * MB:
        wrote += f" (+ {e.scratch_bytes / GB:.2f} GB scratch while it runs)"
    return f"≈ {human_time(e.seconds)}, {e.peak_rss_mb * MB / GB:.1f} GB peak{wrote}{learned}"


def summary(plan) -> list[str]:
    cost = plan.cost
    if cost is None:
        return []
    if not cost.stages:
        return [f"[dim]estimate:[/] {escape(cost.note or 'nothing to run: every stage is cached')}"]
    s = cost.speed
    peak_id, peak = max(cost.stages.items(), key=lambda kv: kv[1].peak_rss_mb)
    free = shutil.disk_usage(existing_ancestor(plan.run_dir)).free
    ram = s.ram_gb * 2**30  # MachineSpeed.ram_gb is GiB (MemTotal / 2^20 kB); every figure here is in GB
    lines = [
        f"[bold]estimate on this machine:[/] ≈ {human_time(cost.seconds)} for {len(cost.stages)} stages, "
        f"peak ≈ {peak.peak_rss_mb * MB / GB:.1f} GB ({escape(peak_id)}) of {ram / GB:.1f} GB RAM, "
        f"writes ≈ {cost.written / GB:.2f} GB of {free / GB:.0f} GB free",
        f"[dim]machine: {escape(s.cpu)}, {s.cores} cores{', ' + escape(s.gpu) if s.gpu else ', no GPU'}; "
        f"float32 {s.gemm_f32_gflops:g} / bf16 {s.gemm_bf16_gflops:g} GFLOP/s, memory {s.memory_gbps:g} GB/s, "
        f"disk {s.disk_write_gbps:g} GB/s; estimates are within about 2x on a quiet machine "
        "(pipeline/docs/estimates.md)[/]",
    ]
    return lines + [f"[yellow]cheaper:[/] {escape(a)}" for a in alternatives(plan, cost)]


def plan_json(plan) -> dict:
    """`plan --json`: what `plan` prints, for programs (CI gates on estimates, dashboards)."""
    cost = plan.cost
    figures = cost.stages if cost else {}
    return {
        "recipe": plan.recipe.name,
        "run_dir": str(plan.run_dir),
        "stages": [
            {
                "id": s.id,
                "kind": str(s.kind),
                "artifact": s.artifact,
                "deps": list(s.deps),
                "key": s.key,
                "cached": plan.cached(s),
                "estimate": figures[s.id].to_json() if s.id in figures else None,
            }
            for s in plan.stages
        ],
        "estimate": None
        if cost is None or not cost.stages
        else {
            "seconds": round(cost.seconds, 1),
            "peak_rss_mb": round(max(e.peak_rss_mb for e in cost.stages.values())),
            "written_bytes": cost.written,
        },
        "serving": list(plan.serving),
        "notes": list(plan.notes),
    }
