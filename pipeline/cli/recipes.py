"""init, schema: writing a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli import app, notes, out
from pipeline.errors import RecipeError


@app.command("init")
def init_cmd(
    model: str = typer.Argument(..., metavar="MODEL", help="local HF checkpoint dir, .gguf file, or Hub repo id"),
    formats: str = typer.Option("awq,gguf:Q4_K_M", "--formats", metavar="LIST", help="e.g. awq,gptq,w8a16,gguf:Q4_K_M"),
    output: Path | None = typer.Option(None, "--output", "-o", metavar="FILE", help="default: recipes/<name>.yaml"),
    revision: str | None = typer.Option(None, "--revision", metavar="SHA", help="Hub commit (default: main's)"),
    name: str | None = typer.Option(None, "--name", metavar="NAME", help="run name (default: from the model)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing recipe file"),
) -> None:
    """Write a recipe for MODEL that plans as written (revision pinned, options fitted to the model)."""
    from pipeline import starter

    recipe = starter.starter(model, formats, revision, name)
    target = output or Path("recipes") / f"{recipe['name']}.yaml"
    if target.exists() and not overwrite:
        raise RecipeError(f"{target} exists; pass --overwrite to replace it", field="output")
    target.parent.mkdir(parents=True, exist_ok=True)
    plan = starter.write(recipe, target, model)
    notes(plan)
    out.print(f"wrote {escape(str(target))}: {len(plan.stages)} stages; next: python -m pipeline plan {target}")


@app.command("schema")
def schema_cmd(
    markdown: bool = typer.Option(False, "--markdown", help="a reference table per section instead of JSON Schema"),
) -> None:
    """The recipe's schema (every field, its type, default and description), from the pydantic models."""
    import pipeline.backends  # noqa: F401  (registers every format's options: Recipe.formats is complete)
    from pipeline.recipe import Recipe

    schema = Recipe.model_json_schema()
    if not markdown:
        print(json.dumps(schema, indent=2))
        return
    from pipeline.report.schema_doc import reference

    print(reference(schema))
