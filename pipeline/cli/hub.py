"""publish: push every package to the Hub (or list what would be pushed)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli import STATE, RecipeArg, WorkdirOpt, app, console, exit_for, load_plan, out


@app.command("publish")
def publish_cmd(
    recipe: Path = RecipeArg,
    workdir: Path = WorkdirOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="list the files, sizes and repos; upload nothing"),
) -> None:
    """Push every artifact's package to the Hub (builds or reuses the run's stages first).

    The token comes from HF_TOKEN or `hf auth login`; repos are named by publish.repo_template."""
    from pipeline.run.runner import execute
    from pipeline.stages import publish

    p = load_plan(recipe, workdir, with_publish=True)
    if not dry_run and not publish.has_token():
        console.print(f"[red]error:[/] {publish.NO_TOKEN}", soft_wrap=True)
        raise typer.Exit(1)
    only = {s.id for s in p.stages if dry_run is False or s.kind != "publish"}
    manifest = execute(
        p, quiet=STATE["quiet"], verbose=STATE["verbose"], only=only, manifest_name="publish-manifest.json"
    )
    for r in manifest.failed():
        console.print(f"[red]error:[/] {escape(r.id)}: {escape(r.error or r.status)}", soft_wrap=True)
    if dry_run:
        _print_dry_run(p)
    exit_for(manifest)


def _print_dry_run(p) -> None:
    from pipeline.stages import publish

    visibility = "private" if p.recipe.publish.private else "public"
    for s in p.stages:
        if s.kind != "publish" or not all(p.cached(p.stage(d)) for d in s.deps):
            continue
        if "model" in s.config:  # the model's GGUF repo: every GGUF type, a file each, and one card
            files = publish.gguf_listing(s.config["model"], [p.stage(d).path for d in s.deps])
        else:
            files = publish.listing(p.stage(s.deps[0]).path)
        size_mb = sum(n for _, n in files) / 1e6
        out.print(
            f"[bold]{escape(s.config['repo'])}[/] ({visibility}): {len(files)} files, {size_mb:.1f} MB", soft_wrap=True
        )
        table = Table()
        table.add_column("file")
        table.add_column("bytes", justify="right")
        for name, size in files:
            table.add_row(escape(name), f"{size:,}")
        out.print(table)
    out.print("dry run: nothing was uploaded")
