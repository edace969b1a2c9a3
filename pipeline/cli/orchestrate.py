"""prefect: run a recipe as a Prefect flow (the integration lives in pipeline.integrations)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli import WorkdirOpt, app, console, out


@app.command("prefect")
def prefect_cmd(
    recipe: Path = typer.Argument(..., help="recipe YAML"),
    workdir: Path = WorkdirOpt,
    workers: int = typer.Option(2, "--workers", help="parallel task processes"),
) -> None:
    """Run the recipe as a Prefect flow (one task per stage; needs the `prefect` extra)."""
    from pipeline.integrations.prefect import build_flow

    try:
        from prefect.task_runners import ProcessPoolTaskRunner
    except ImportError:
        ProcessPoolTaskRunner = None  # build_flow names the missing extra
    runner = ProcessPoolTaskRunner(max_workers=workers) if ProcessPoolTaskRunner else None
    summary = build_flow(recipe, workdir, task_runner=runner)()
    out.print(f"prefect flow: {summary['status']}; manifest: {summary['manifest']}")
    if summary["failed"]:
        for stage_id, reason in summary["failed"].items():
            console.print(f"[red]✗ {escape(stage_id)}[/] {escape(reason)}", soft_wrap=True)
        raise typer.Exit(1)
