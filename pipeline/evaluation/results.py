"""The run's results: one row per artifact (and the base model) from the manifest, as a markdown or
console table. pipeline.report writes them to files with the plot.

Works from the manifest on disk alone, so `python -m pipeline report RUN_DIR` can redo it."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from pipeline.console import out as stdout
from pipeline.evaluation.metrics import describe
from pipeline.stage_id import REFERENCE, StageId

COLUMNS = (
    "artifact",
    "format",
    "engine",
    "size MB",
    "ppl",
    "Δppl %",
    "KLD",
    "KLD p99",
    "top-1 %",
    "pp t/s",
    "tg t/s",
    "tg % roofline",
    "gates",
)


def rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    stages = {s["id"]: s for s in manifest["stages"]}
    out = []
    ref = stages.get(REFERENCE)
    if ref and ref.get("info"):
        out.append(row("base", f"unquantized ({ref['info'].get('dtype', 'float32')})", ref["info"], "ok"))
    for s in manifest["stages"]:  # the unquantized model in each other engine: what a format adds is read against it
        if s["kind"] == "floor" and s.get("info"):
            out.append(row(f"floor: {s['info']['engine']}", "unquantized, in this engine", s["info"], "-"))
    for name, label in labels(manifest).items():
        ev = stages.get(StageId("evaluate", name))
        if not ev:
            continue
        status = {"done": "ok", "cached": "ok", "failed-gates": "FAILED: " + (ev.get("error") or "")}.get(
            ev["status"], ev["status"]
        )
        out.append(row(name, label, ev.get("info") or {}, status))
        for s in manifest["stages"]:  # the same artifact measured in another engine (vLLM): no gates, its own row
            if s["kind"] == "evaluate-engine" and s.get("artifact") == name:
                info = s.get("info") or {}
                done = s["status"] in ("done", "cached")
                status = ("not served: " + info["refused"]) if "refused" in info else "-" if done else s["status"]
                out.append(row(name, label, info, status))
    return out


def labels(manifest: dict[str, Any]) -> dict[str, str]:
    """Artifact -> its format as the table names it, as the plan stored it (manifests written before
    labels were stored: from the quantize stages' own facts)."""
    if "artifacts" in manifest:
        return {name: a["format"] for name, a in manifest["artifacts"].items()}
    out = {}
    for s in manifest["stages"]:
        if s["kind"] == "quantize":
            info = s.get("info") or {}
            out[s["artifact"]] = f"gguf {info['type']}" if info.get("type") else info.get("format", s["artifact"])
    return out


def row(name: str, fmt: str, info: dict[str, Any], gates: str) -> dict[str, Any]:
    device, sp = next(iter((info.get("speed") or {}).items()), (None, {}))
    engine = info.get("engine")
    return {
        "artifact": name,
        "format": fmt,
        "family": fmt.split()[0],
        "engine": f"{engine} ({device})" if engine and device else engine,
        "size_mb": _mb(info.get("size_bytes")),
        "ppl": info.get("ppl"),
        "ppl_increase_pct": info.get("ppl_increase_pct"),
        "kld": info.get("kld"),
        "kld_p99": info.get("kld_p99"),
        "top1_pct": info.get("top1_pct"),
        "pp_tps": (sp.get("pp_tps") or {}).get("median"),
        "tg_tps": (sp.get("tg_tps") or {}).get("median"),
        "pp_spread": (sp.get("pp_tps") or {}).get("spread_pct"),
        "tg_spread": (sp.get("tg_tps") or {}).get("spread_pct"),
        "batch_tps": (sp.get("batch_tps") or {}).get("median"),
        "batch_spread": (sp.get("batch_tps") or {}).get("spread_pct"),
        "batch": sp.get("batch"),
        **{f"{k}_n": (sp.get(f"{k}_tps") or {}).get("n") for k in ("pp", "tg", "batch")},
        "noisy": sp.get("noisy") or [],
        "roofline_pct": sp.get("roofline_pct"),
        "roofline_note": sp.get("roofline_note"),
        "tasks": info.get("tasks"),
        "gates": gates,
        "kld_method": info.get("kld_method"),
        "score": info.get("score"),
        "caveat": info.get("caveat"),  # what this load does not measure, or measures differently
    }


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 1e6, 1)


def _fixed_cells(r: dict[str, Any]) -> list[str]:
    f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    roof = "probe?" if r.get("roofline_note") else f(r["roofline_pct"], 0)
    return [
        r["artifact"],
        r["format"],
        r["engine"] or "-",
        f(r["size_mb"], 1),
        f(r["ppl"], 3),
        f(r["ppl_increase_pct"]),
        f(r["kld"], 4),
        f(r["kld_p99"], 3),
        f(r["top1_pct"], 1),
        _speed(r, "pp"),
        _speed(r, "tg"),
        roof,
        r["gates"],
    ]


def _speed(r: dict[str, Any], which: str) -> str:
    """Median, its spread, and `noisy` when the repetitions never settled (evaluation.speed)."""
    value, spread = r.get(f"{which}_tps"), r.get(f"{which}_spread")
    if value is None:
        return "-"
    mark = " noisy" if f"{which}_tps" in (r.get("noisy") or []) else ""
    if r.get(f"{which}_n") == 1:  # one sample has no spread to show
        return f"{value:.1f} (1 sample){mark}"
    return f"{value:.1f} ±{spread:.0f}%{mark}" if spread is not None else f"{value:.1f}{mark}"


def task_columns(table: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(task, metric) pairs: each task's first reported metric (acc for multiple choice)."""
    cols: list[tuple[str, str]] = []
    for r in table:
        for task, metrics in (r.get("tasks") or {}).items():
            metric = next((m for m in metrics if "stderr" not in m and m != "sample_len"), None)
            if metric and (task, metric) not in cols:
                cols.append((task, metric))
    return cols


def _task_cells(r: dict[str, Any], cols: list[tuple[str, str]]) -> list[str]:
    vals = [((r.get("tasks") or {}).get(t) or {}).get(m) for t, m in cols]
    return ["-" if v is None else f"{v:.3f}" for v in vals]


def _batched(table: list[dict[str, Any]]) -> bool:
    return any(r.get("batch_tps") is not None for r in table)


def header(table: list[dict[str, Any]]) -> list[str]:
    """Column names: the fixed ones (with batched throughput when an engine measured it), one per lm-eval task, then
    gates."""
    fixed = list(COLUMNS[:-1])
    if _batched(table):
        fixed.insert(fixed.index("tg t/s") + 1, "batch t/s")
    return fixed + [f"{t} {m.split(',')[0]}" for t, m in task_columns(table)] + [COLUMNS[-1]]


def cells(r: dict[str, Any], table: list[dict[str, Any]]) -> list[str]:
    """One row's cells, in header(table)'s order."""
    fixed = _fixed_cells(r)
    if _batched(table):
        fixed.insert(COLUMNS.index("tg t/s") + 1, _speed(r, "batch"))
    return fixed[:-1] + _task_cells(r, task_columns(table)) + fixed[-1:]


def notes(table: list[dict[str, Any]]) -> list[str]:
    """What the numbers are: how KLD was computed and on which positions, and speed caveats."""

    out = []
    methods = {
        r["kld_method"]: r.get("score") or "all" for r in table if r.get("kld_method") and r.get("kld") is not None
    }
    for i, (method, score) in enumerate(methods.items()):
        engines = (
            sorted({r["engine"] or "-" for r in table if r.get("kld_method") == method}) if len(methods) > 1 else []
        )
        which = f" ({', '.join(engines)})" if engines else ""
        out.append(
            f"KLD{which}: mean KL(base || artifact) per token in nats; {describe(method, score)}."
            if i == 0
            else f"KLD{which}: {describe(method, score)}."
        )
    out.append(
        "Speed: median tokens/s ± half the spread of the settled repetitions; `noisy`: they never agreed within the "
        "tolerance (another process was busy): do not compare it."
    )
    batch = next((r["batch"] for r in table if r.get("batch")), None)
    if batch:
        out.append(
            f"batch t/s: tokens generated per second by {batch} concurrent requests (vLLM, over HTTP: TTFT and decode "
            "include the server's request overhead)."
        )
    out += [f"{r['artifact']}: {r['caveat']}." for r in table if r.get("caveat")]
    if any(r.get("roofline_note") for r in table):
        out.append(
            "tg % roofline `probe?`: decode ran faster than the measured memory bandwidth allows, "
            "so the bandwidth probe was "
            "wrong in this run (measured under load); no percentage is given."
        )
    return out


def markdown(table: list[dict[str, Any]]) -> str:
    head = header(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(cells(r, table)) + " |" for r in table
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(notes(table)) + "\n"


def print_table(table: list[dict[str, Any]], title: str) -> None:

    t = Table(title=title, title_justify="left")
    for c in header(table):
        t.add_column(escape(c), justify="right" if c not in ("artifact", "format", "engine", "gates") else "left")
    for r in table:
        row_cells = [escape(c) for c in cells(r, table)]
        color = "red" if r["gates"].startswith("FAILED") else "green"
        t.add_row(*row_cells[:-1], f"[{color}]{row_cells[-1]}[/]")
    stdout.print(t)
    for n in notes(table):
        stdout.print(f"[dim]{escape(n)}[/]", soft_wrap=True)
