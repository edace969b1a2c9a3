"""`python -m pipeline COMMAND`. Exit codes: 0 ok, 1 a stage failed, 2 bad input.

The app and what every command shares live here; the commands live in one module per group
(runs.py: run/plan/calib/report/gc; hub.py: publish; tools.py: setup/twin/list-formats;
orchestrate.py: prefect), registered on `app` when imported below."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from pipeline.console import console, out, quiet_libraries
from pipeline.errors import RecipeError, exit_code_of, interrupted_exit_code, interruptible

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's own help and usage errors: flags without a `<bool>` type
    help="One YAML recipe: quantize a causal LM to many formats, evaluate, package and publish every artifact.",
)
STATE = {"verbose": False, "quiet": False}

WorkdirOpt = typer.Option(
    Path("runs"), "--workdir", "-w", metavar="DIR", help="where runs live: <workdir>/<recipe name>/"
)
RecipeArg = typer.Argument(..., metavar="RECIPE", help="recipe YAML")
FormatsOpt = typer.Option(
    None, "--formats", metavar="NAMES", help="only these artifacts, comma-separated (e.g. awq,gguf-q4_k_m)"
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out.print(f"llm-quant-pipeline {version('llm-quant-pipeline')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            out.print("llm-quant-pipeline (not installed)")
        raise typer.Exit()


@app.callback()
def _options(
    verbose: bool = typer.Option(False, "-v", "--verbose", help="library logs and tracebacks"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="no progress display, library bars included"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    STATE.update(verbose=verbose, quiet=quiet)
    quiet_libraries(verbose)


def load_plan(
    recipe: Path,
    workdir: Path,
    with_calibration: bool = False,
    with_publish: bool | None = None,
    formats: str | None = None,
):
    from pipeline.api import select_formats
    from pipeline.cost import price
    from pipeline.graph.plan import build_plan
    from pipeline.recipe_loader import load_recipe

    r = select_formats(load_recipe(recipe), format_names(formats))
    return price(build_plan(r, recipe, workdir, with_calibration, with_publish))


def format_names(formats: str | None) -> list[str] | None:
    """`--formats awq,gguf:Q4_K_M` -> artifact names (`gguf:Q4_K_M` is spelled as plan prints it: gguf-q4_k_m)."""
    if not formats:
        return None
    return [n.strip().replace(":", "-").lower() for n in formats.split(",") if n.strip()]


def notes(p) -> None:
    for note in p.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)


def exit_for(manifest) -> None:
    failed = manifest.failed()
    if failed:
        broken = [r for r in failed if r.status in ("failed", "failed-gates")]
        raise typer.Exit(2 if broken and all(r.bad_input for r in broken) else 1)


INTERRUPTED = "[red]interrupted[/]: finished stages are kept; rerun to resume"


def main() -> None:
    # Ctrl-C, SIGTERM and SIGHUP must reach us as Interrupted (temp dirs cleaned, children stopped,
    # manifest marked) even when the parent started us with SIGINT ignored, as background jobs do.
    with interruptible():
        _main()


def _main() -> None:
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit codes instead of raising here
        if code == 130:  # typer turns KeyboardInterrupt into Exit(130), whichever signal raised it
            console.print(INTERRUPTED)
            code = interrupted_exit_code()
        sys.exit(code if isinstance(code, int) else 0)
    except RecipeError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt as e:
        console.print(INTERRUPTED)
        sys.exit(exit_code_of(e))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        if _is_click(e, "ClickException"):  # usage errors: click's usage line and message, exit 2
            e.show()  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        if _is_click(e, "Abort"):  # click's form of KeyboardInterrupt
            console.print(INTERRUPTED)
            sys.exit(exit_code_of(e))
        if STATE["verbose"]:
            raise
        console.print(
            f"[red]error:[/] {type(e).__name__}: {escape(str(e))} (rerun with -v for the traceback)", soft_wrap=True
        )
        sys.exit(1)


def _is_click(e: BaseException, name: str) -> bool:
    """Whether `e` is click's `name` exception: typer >= 0.29 raises those of the click it bundles
    (typer._click), older typers those of click itself, so the class is found by name in either."""
    return any(c.__name__ == name and c.__module__.endswith("click.exceptions") for c in type(e).__mro__)


from pipeline.cli import runs, recipes, hub, orchestrate, tools  # noqa: E402,F401,I001  (command registration, in --help order)
