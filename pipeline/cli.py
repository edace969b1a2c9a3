"""`python -m pipeline run|plan|list-formats`. Exit codes: 0 ok, 1 a stage failed, 2 bad input."""

from __future__ import annotations

from rich.markup import escape

import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.tree import Tree

from pipeline.console import console, out, quiet_libraries
from pipeline.errors import RecipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__)
STATE = {"verbose": False, "quiet": False}

WorkdirOpt = typer.Option(Path("runs"), "--workdir", "-w", help="where runs live: <workdir>/<recipe name>/")


@app.callback()
def _options(verbose: bool = typer.Option(False, "-v", "--verbose", help="library logs and tracebacks"),
             quiet: bool = typer.Option(False, "-q", "--quiet", help="no progress display")) -> None:
    STATE.update(verbose=verbose, quiet=quiet)
    quiet_libraries(verbose)


def _load(recipe: Path, workdir: Path, with_calibration: bool = False, with_publish: bool | None = None):
    from pipeline.plan import build_plan
    from pipeline.recipe_loader import load_recipe

    return build_plan(load_recipe(recipe), recipe, workdir, with_calibration, with_publish)


@app.command()
def plan(recipe: Path = typer.Argument(..., help="recipe YAML"), workdir: Path = WorkdirOpt) -> None:
    """Validate the recipe, check feasibility, and print the stage graph and what is cached. Runs nothing."""
    p = _load(recipe, workdir)
    tree = Tree(f"[bold]{p.recipe.name}[/]  [dim]{recipe} → {p.run_dir}[/]")
    nodes = {}
    for s in p.stages:
        state = "[green]cached[/]" if p.cached(s) else "[yellow]to run[/]"
        label = f"[bold]{escape(s.id)}[/]  {s.describe}  {state} [dim]{s.key[:12]}[/]"
        nodes[s.id] = (nodes[s.deps[-1]] if s.deps else tree).add(label)
    out.print(tree)
    for note in p.serving:
        out.print(f"[dim]serving:[/] {escape(note)}", soft_wrap=True)


@app.command()
def run(recipe: Path = typer.Argument(..., help="recipe YAML"), workdir: Path = WorkdirOpt,
        force: Optional[list[str]] = typer.Option(None, "--force", "-f", help="rerun this stage (id, kind or artifact) and what follows")) -> None:
    """Run every stage of the recipe, reusing finished stages from earlier runs."""
    from pipeline.runner import execute

    p = _load(recipe, workdir)
    manifest = execute(p, force=force or [], quiet=STATE["quiet"], verbose=STATE["verbose"])
    table = Table(title=f"{p.recipe.name}: {manifest.status}", title_justify="left")
    for col in ("stage", "status", "seconds", "peak RSS MB", "output"):
        table.add_column(col)
    colors = {"done": "green", "cached": "green", "failed": "red", "failed-gates": "red", "skipped": "yellow"}
    for r in manifest.records:
        table.add_row(escape(r.id), f"[{colors.get(r.status, 'white')}]{r.status}[/]", f"{r.seconds:.1f}" if r.seconds is not None else "",
                      str(r.peak_rss_mb or ""), escape(r.error or r.path))
    out.print(table)
    _report(p.run_dir, f"{p.recipe.name}: evaluation (CPU; KLD and top-1 against the base model)")
    out.print(f"manifest: {manifest.path}")
    _exit_for(manifest)


def _exit_for(manifest) -> None:
    failed = manifest.failed()
    if failed:
        broken = [r for r in failed if r.status in ("failed", "failed-gates")]
        raise typer.Exit(2 if broken and all(r.bad_input for r in broken) else 1)


def _report(run_dir: Path, title: str) -> None:
    from pipeline.evaluation import results
    from pipeline.report import report

    rows = report.write(run_dir)
    if rows:
        results.print_table(rows, title)
    packages = sorted(p.name for p in (run_dir / "packages").iterdir()) if (run_dir / "packages").is_dir() else []
    if packages:
        out.print(f"packages (model card, serving/, manifest.json): {run_dir / 'packages'}/{{{','.join(packages)}}}")
    out.print(f"report: {run_dir / 'report.md'}, {run_dir / 'report.html'}" + (f", {run_dir / 'results.png'}" if rows else ""))


calib = typer.Typer(help="Calibration data.", no_args_is_help=True)
app.add_typer(calib, name="calib")


@calib.command("show")
def calib_show(recipe: Path = typer.Argument(..., help="recipe YAML"), workdir: Path = WorkdirOpt,
               count: int = typer.Option(2, "--samples", "-n", help="decoded samples to print")) -> None:
    """Build (or reuse) the recipe's calibration set; print its stats and a few decoded samples."""
    import json

    from pipeline.runner import execute
    from pipeline.stages.calibration import load

    p = _load(recipe, workdir, with_calibration=True)
    manifest = execute(p, quiet=STATE["quiet"], verbose=STATE["verbose"], only={"source", "calibration"}, manifest_name="calib-manifest.json")
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


setup_app = typer.Typer(help="Build or install the tools some formats need.", no_args_is_help=True)
app.add_typer(setup_app, name="setup")


@setup_app.command("llama-cpp")
def setup_llama_cpp(jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="parallel compile jobs (default: CPU count)")) -> None:
    """Build llama.cpp's tools from the source llama-cpp-python ships (once per machine) and install the bindings."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline import llamacpp

    log_path = llamacpp.home().parent / "llama.cpp-setup.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with open(log_path, "w", buffering=1) as log, Progress(*columns, console=console, disable=STATE["quiet"], transient=True) as progress:
        task = progress.add_task("llama.cpp", total=None)
        def report(what: str, done: int | None, total: int | None) -> None:
            counts = {"completed": done, "total": total} if total else {}
            progress.update(task, description=what, **counts)

        chain = llamacpp.setup(jobs, report, log)
    out.print(f"llama.cpp toolchain: {chain.root}  [dim](log: {log_path})[/]")


@app.command("prefect")
def prefect_cmd(recipe: Path = typer.Argument(..., help="recipe YAML"), workdir: Path = WorkdirOpt,
                workers: int = typer.Option(2, "--workers", help="parallel task processes")) -> None:
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


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="a run directory (holds manifest.json)")) -> None:
    """Rebuild report.md/html and results.json/md/png of a run from its manifest, and print the table."""
    if not (run_dir / "manifest.json").is_file():
        raise RecipeError(f"{run_dir} holds no manifest.json (not a run directory)")
    _report(run_dir, f"{run_dir.name}: evaluation")


app.command("results", hidden=True, help="Same as `report`.")(report_cmd)


@app.command("publish")
def publish_cmd(recipe: Path = typer.Argument(..., help="recipe YAML"), workdir: Path = WorkdirOpt,
                dry_run: bool = typer.Option(False, "--dry-run", help="list the files, sizes and repos; upload nothing")) -> None:
    """Push every artifact's package to the Hub (builds or reuses the run's stages first).

    The token comes from HF_TOKEN or `hf auth login`; repos are named by publish.repo_template."""
    from pipeline.runner import execute
    from pipeline.stages import publish

    p = _load(recipe, workdir, with_publish=True)
    if not dry_run and not publish.has_token():
        console.print(f"[red]error:[/] {publish.NO_TOKEN}", soft_wrap=True)
        raise typer.Exit(1)
    only = {s.id for s in p.stages if dry_run is False or s.kind != "publish"}
    manifest = execute(p, quiet=STATE["quiet"], verbose=STATE["verbose"], only=only, manifest_name="publish-manifest.json")
    for r in manifest.failed():
        console.print(f"[red]error:[/] {escape(r.id)}: {escape(r.error or r.status)}", soft_wrap=True)
    if dry_run:
        _print_dry_run(p)
    _exit_for(manifest)


def _print_dry_run(p) -> None:
    from pipeline.stages import publish

    visibility = "private" if p.recipe.publish.private else "public"
    for s in p.stages:
        if s.kind != "publish" or not p.cached(p.stage(s.deps[0])):
            continue
        files = publish.listing(p.stage(s.deps[0]).path)
        out.print(f"[bold]{escape(s.config['repo'])}[/] ({visibility}): {len(files)} files, {sum(n for _, n in files) / 1e6:.1f} MB", soft_wrap=True)
        table = Table()
        table.add_column("file")
        table.add_column("bytes", justify="right")
        for name, size in files:
            table.add_row(escape(name), f"{size:,}")
        out.print(table)
    out.print("dry run: nothing was uploaded")


@app.command("list-formats")
def list_formats() -> None:
    """Formats this installation knows, their backend, and whether the backend is installed."""
    from pipeline.backends import FORMATS

    table = Table()
    for col in ("format", "backend", "installed", "options"):
        table.add_column(col)
    for name, info in FORMATS.items():
        missing = info.backend.missing()
        installed = "[green]yes[/]" if not missing else "[red]no[/]: " + escape(info.backend.install_hint())
        options = ", ".join(f for f in info.options.model_fields if f not in ("format", "name"))
        table.add_row(name, info.backend.name, installed, options)
    out.print(table)


def main() -> None:
    # Ctrl-C must reach us as KeyboardInterrupt (temp dirs cleaned, manifest marked) even when the
    # parent process started us with SIGINT ignored or defaulted, as background jobs and CI runners do.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit codes instead of raising here
        if code == 130:  # typer turns KeyboardInterrupt into Exit(130)
            console.print("[red]interrupted[/]: finished stages are kept; rerun to resume")
        sys.exit(code if isinstance(code, int) else 0)
    except RecipeError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: finished stages are kept; rerun to resume")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - click usage errors and the unexpected, as one line
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):  # click's form of KeyboardInterrupt
            console.print("[red]interrupted[/]: finished stages are kept; rerun to resume")
            sys.exit(130)
        if STATE["verbose"]:
            raise
        console.print(f"[red]error:[/] {type(e).__name__}: {escape(str(e))} (rerun with -v for the traceback)", soft_wrap=True)
        sys.exit(1)
