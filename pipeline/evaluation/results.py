"""The run's results: one row per artifact (and the base model) from the manifest, as a markdown or
console table. pipeline.report writes them to files with the plot.

Works from the manifest on disk alone, so `python -m pipeline report RUN_DIR` can redo it."""

from __future__ import annotations

from typing import Any

COLUMNS = ("artifact", "format", "engine", "size MB", "ppl", "Δppl %", "KLD", "KLD p99", "top-1 %", "CPU pp t/s", "CPU tg t/s", "tg % roofline", "gates")


def rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    stages = {s["id"]: s for s in manifest["stages"]}
    formats = {f.get("name") or _default_name(f): f for f in manifest["resolved"]["formats"]}
    out = []
    ref = stages.get("reference")
    if ref and ref.get("info"):
        out.append(row("base", "unquantized (float32)", ref["info"], "ok"))
    for name, fmt in formats.items():
        ev = stages.get(f"evaluate[{name}]")
        if not ev:
            continue
        status = {"done": "ok", "cached": "ok", "failed-gates": "FAILED: " + (ev.get("error") or "")}.get(ev["status"], ev["status"])
        out.append(row(name, _describe(fmt), ev.get("info") or {}, status))
    return out


def _default_name(fmt: dict[str, Any]) -> str:
    return f"gguf-{fmt['type'].lower()}" if fmt["format"] == "gguf" else fmt["format"]


def _describe(fmt: dict[str, Any]) -> str:
    return f"gguf {fmt['type']}" if fmt["format"] == "gguf" else fmt["format"]


def row(name: str, fmt: str, info: dict[str, Any], gates: str) -> dict[str, Any]:
    cpu = (info.get("speed") or {}).get("cpu") or {}
    return {"artifact": name, "format": fmt, "family": fmt.split()[0], "engine": info.get("engine"), "size_mb": _mb(info.get("size_bytes")),
            "ppl": info.get("ppl"), "ppl_increase_pct": info.get("ppl_increase_pct"), "kld": info.get("kld"), "kld_p99": info.get("kld_p99"),
            "top1_pct": info.get("top1_pct"), "pp_tps": (cpu.get("pp_tps") or {}).get("median"), "tg_tps": (cpu.get("tg_tps") or {}).get("median"),
            "roofline_pct": cpu.get("roofline_pct"), "tasks": info.get("tasks"), "gates": gates, "kld_method": info.get("kld_method")}


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 1e6, 1)


def _fixed_cells(r: dict[str, Any]) -> list[str]:
    f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    return [r["artifact"], r["format"], r["engine"] or "-", f(r["size_mb"], 1), f(r["ppl"], 3), f(r["ppl_increase_pct"]), f(r["kld"], 4),
            f(r["kld_p99"], 3), f(r["top1_pct"], 1), f(r["pp_tps"], 1), f(r["tg_tps"], 1), f(r["roofline_pct"], 0), r["gates"]]


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


def header(table: list[dict[str, Any]]) -> list[str]:
    """Column names: the fixed ones, one per lm-eval task, then gates."""
    return list(COLUMNS[:-1]) + [f"{t} {m.split(',')[0]}" for t, m in task_columns(table)] + [COLUMNS[-1]]


def cells(r: dict[str, Any], table: list[dict[str, Any]]) -> list[str]:
    """One row's cells, in header(table)'s order."""
    fixed = _fixed_cells(r)
    return fixed[:-1] + _task_cells(r, task_columns(table)) + fixed[-1:]


def markdown(table: list[dict[str, Any]]) -> str:
    head = header(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(cells(r, table)) + " |" for r in table]
    method = next((r["kld_method"] for r in table if r.get("kld_method")), None)
    note = f"\nKLD: mean KL(base || artifact) per token in nats, over the base model's {method} distribution" if method else ""
    return "\n".join(lines) + "\n" + (note + (" (top-k tokens plus one bucket for the rest: a lower bound on the full KLD)" if method and method.startswith("top") else "") + "\n" if note else "")


def print_table(table: list[dict[str, Any]], title: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from pipeline.console import out

    t = Table(title=title, title_justify="left")
    for c in header(table):
        t.add_column(escape(c), justify="right" if c not in ("artifact", "format", "engine", "gates") else "left")
    for r in table:
        row_cells = [escape(c) for c in cells(r, table)]
        color = "red" if r["gates"].startswith("FAILED") else "green"
        t.add_row(*row_cells[:-1], f"[{color}]{row_cells[-1]}[/]")
    out.print(t)
