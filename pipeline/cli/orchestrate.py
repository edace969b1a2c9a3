"""prefect, dask: run a recipe through an orchestrator (the integrations live in pipeline.integrations)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from pipeline.cli import RecipeArg, WorkdirOpt, app, console, out


@app.command("prefect")
def prefect_cmd(
    recipe: Path = RecipeArg,
    workdir: Path = WorkdirOpt,
    workers: int = typer.Option(2, "--workers", help="parallel task processes"),
) -> None:
    """Run the recipe as a Prefect flow (one task per stage; needs the `prefect` extra)."""
    from pipeline import api
    from pipeline.integrations.prefect import ProcessPoolTaskRunner, quantize_flow

    api.plan(recipe, workdir)  # bad input: one line, exit 2, before a Prefect server starts
    flow = quantize_flow.with_options(task_runner=ProcessPoolTaskRunner(max_workers=workers))
    state = flow(str(recipe), str(workdir), return_state=True)
    _summary(state.result(raise_on_failure=False), "prefect flow")


@app.command("dask")
def dask_cmd(
    recipe: Path = RecipeArg,
    workdir: Path = WorkdirOpt,
    scheduler: str = typer.Option("", "--scheduler", help="address of a running Dask scheduler (tcp://host:8786)"),
    workers: int = typer.Option(2, "--workers", help="local worker processes, without --scheduler"),
) -> None:
    """Run the recipe's stages on a Dask cluster (a shared workdir; needs the `dask` extra)."""
    from pipeline import api
    from pipeline.integrations.dask import client_for, run_on_cluster

    api.plan(recipe, workdir)
    with client_for(scheduler, workers) as client:
        _summary(run_on_cluster(recipe, workdir, client), "dask")


def _summary(summary: Any, what: str) -> None:
    if isinstance(summary, BaseException):  # the flow failed before its results (its log has why)
        raise summary
    out.print(f"{what}: {summary['status']}; manifest: {summary['manifest']}")
    for stage_id, reason in summary["failed"].items():
        console.print(f"[red]✗ {escape(stage_id)}[/] {escape(reason)}", soft_wrap=True)
    if summary["status"] != "ok":
        raise typer.Exit(1)
