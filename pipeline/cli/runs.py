"""run, plan, calib show, report, gc: the commands about one recipe's run."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from pipeline.cli import (
    STATE,
    FormatsOpt,
    RecipeArg,
    WorkdirOpt,
    app,
    console,
    estimates,
    exit_for,
    format_names,
    load_plan,
    notes,
    out,
)
from pipeline.errors import RecipeError


@app.command()
def plan(
    recipe: Path = RecipeArg,
    workdir: Path = WorkdirOpt,
    formats: str | None = FormatsOpt,
    as_json: bool = typer.Option(False, "--json", help="the plan as JSON on stdout (stages, keys, estimates, notes)"),
) -> None:
    """Validate the recipe, check feasibility, and print the stage graph and what is cached. Runs nothing."""
    p = load_plan(recipe, workdir, formats=formats)
    if as_json:
        print(json.dumps(estimates.plan_json(p), indent=2))
        return
    tree = Tree(f"[bold]{p.recipe.name}[/]  [dim]{recipe} → {p.run_dir}[/]")
    nodes = {}
    figures = p.cost.stages if p.cost else {}
    for s in p.stages:
        state = "[green]cached[/]" if p.cached(s) else "[yellow]to run[/]"
        e = figures.get(s.id)
        cost = f"  [cyan]{escape(estimates.short(e))}[/]" if e else ""
        label = f"[bold]{escape(s.id)}[/]  {s.describe}  {state}{cost} [dim]{s.key[:12]}[/]"
        nodes[s.id] = (nodes[s.deps[-1]] if s.deps else tree).add(label)
    out.print(tree)
    for line in estimates.summary(p):
        out.print(line, soft_wrap=True)
    for note in p.serving:
        out.print(f"[dim]serving:[/] {escape(note)}", soft_wrap=True)
    notes(p)


@app.command()
def run(
    recipe: Path = RecipeArg,
    workdir: Path = WorkdirOpt,
    formats: str | None = FormatsOpt,
    force: list[str] | None = typer.Option(
        None, "--force", "-f", metavar="STAGE", help="rerun this stage (id, kind or artifact) and what follows"
    ),
) -> None:
    """Run every stage of the recipe, reusing finished stages from earlier runs."""
    from pipeline.api import manifest_name
    from pipeline.run.runner import execute

    p = load_plan(recipe, workdir, formats=formats)
    notes(p)
    only = format_names(formats)
    manifest = execute(
        p, force=force or [], quiet=STATE["quiet"], verbose=STATE["verbose"], manifest_name=manifest_name(only)
    )
    table = Table(title=f"{p.recipe.name}: {manifest.status}", title_justify="left")
    for col in ("stage", "status", "seconds", "peak RSS MB", "output"):
        table.add_column(col)
    colors = {"done": "green", "cached": "green", "failed": "red", "failed-gates": "red", "skipped": "yellow"}
    for r in manifest.records:
        table.add_row(
            escape(r.id),
            f"[{colors.get(r.status, 'white')}]{r.status}[/]",
            f"{r.seconds:.1f}" if r.seconds is not None else "",
            str(r.peak_rss_mb or ""),
            escape(r.error or r.path),
        )
    out.print(table)
    if only:  # the report covers every format: a full run (or `report`) writes it
        out.print(f"only {', '.join(only)}: the run's report is left as it was (`report {p.run_dir}` rewrites it)")
    else:
        _report(p.run_dir, f"{p.recipe.name}: evaluation (KLD and top-1 against the base model)")
    out.print(f"manifest: {manifest.path}")
    exit_for(manifest)


def _report(run_dir: Path, title: str) -> None:
    from pipeline.evaluation import results
    from pipeline.report import report

    rows = report.write(run_dir)
    if rows:
        results.print_table(rows, title)
    packages = sorted(p.name for p in (run_dir / "packages").iterdir()) if (run_dir / "packages").is_dir() else []
    if packages:
        out.print(f"packages (model card, serving/, manifest.json): {run_dir / 'packages'}/{{{','.join(packages)}}}")
    out.print(
        f"report: {run_dir / 'report.md'}, {run_dir / 'report.html'}" + (f", {run_dir / 'results.png'}" if rows else "")
    )


calib = typer.Typer(help="Calibration data.", no_args_is_help=True)
app.add_typer(calib, name="calib")


@calib.command("show")
def calib_show(
    recipe: Path = RecipeArg,
    workdir: Path = WorkdirOpt,
    count: int = typer.Option(2, "--samples", "-n", help="decoded samples to print"),
) -> None:
    """Build (or reuse) the recipe's calibration set; print its stats and a few decoded samples."""
    import json

    from pipeline.data.samples import load
    from pipeline.run.runner import execute

    p = load_plan(recipe, workdir, with_calibration=True)
    manifest = execute(
        p,
        quiet=STATE["quiet"],
        verbose=STATE["verbose"],
        only={"source", "calibration"},
        manifest_name="calib-manifest.json",
    )
    failed = manifest.failed()
    if failed:
        console.print(f"[red]error:[/] {escape(failed[0].id)}: {escape(failed[0].error or 'failed')}", soft_wrap=True)
        raise typer.Exit(2 if failed[0].bad_input else 1)
    stage = p.stage("calibration")
    stats = json.loads((stage.path / "stats.json").read_text())
    out.print(f"[bold]calibration set[/] {stage.path}")
    table = Table(show_header=False)
    for k, v in stats.items():
        table.add_row(k, str(v))
    out.print(table)
    for i, sample in enumerate(load(stage.path)[:count]):
        out.rule(f"sample {i} ({len(sample['input_ids'])} tokens)")
        out.print(escape(sample["text"]), soft_wrap=True)


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="a run directory (holds manifest.json)"),
) -> None:
    """Rebuild report.md/html and results.json/md/png of a run from its manifest, and print the table."""
    if not (run_dir / "manifest.json").is_file():
        raise RecipeError(f"{run_dir} holds no manifest.json (not a run directory)")
    _report(run_dir, f"{run_dir.name}: evaluation")


app.command("results", hidden=True, help="Same as `report`.")(report_cmd)


@app.command("gc")
def gc_cmd(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="a run directory (holds manifest.json)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed; remove nothing"),
) -> None:
    """Remove stage outputs that no manifest or link of the run refers to any more (superseded by recipe changes)."""
    from pipeline.run import superseded
    from pipeline.run.cache import run_lock

    if not (run_dir / "manifest.json").is_file():
        raise RecipeError(f"{run_dir} holds no manifest.json (not a run directory)")
    with run_lock(run_dir):
        found, stale = superseded.collect(run_dir, dry_run)
    table = Table(
        title=f"{run_dir}: {len(found)} superseded stage output(s)"
        + (" (dry run: nothing removed)" if dry_run else " removed"),
        title_justify="left",
    )
    for col in ("stage", "directory", "frees MB"):
        table.add_column(col)
    for s in found:
        table.add_row(escape(s.stage), escape(s.path.name), f"{s.frees / 1e6:,.1f}")
    out.print(table)
    if stale:
        out.print(
            f"temp dirs of interrupted runs{' (would be removed)' if dry_run else ' removed'}: {', '.join(stale)}"
        )
    out.print(f"{'would free' if dry_run else 'freed'} {sum(s.frees for s in found) / 1e6:,.1f} MB")
