"""setup, twin, list-formats: tools and machine-wide preparation, no recipe needed."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli import STATE, app, console, out
from pipeline.errors import RecipeError

setup_app = typer.Typer(help="Build or install the tools some formats need.", no_args_is_help=True)
app.add_typer(setup_app, name="setup")


@setup_app.command("llama-cpp")
def setup_llama_cpp(
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="parallel compile jobs (default: CPU count)"),
) -> None:
    """Build llama.cpp's tools from the source llama-cpp-python ships (once per machine) and install the bindings."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from pipeline.tools import llamacpp_toolchain

    log_path = llamacpp_toolchain.home().parent / "llama.cpp-setup.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        open(log_path, "w", buffering=1) as log,
        Progress(*columns, console=console, disable=STATE["quiet"], transient=True) as progress,
    ):
        task = progress.add_task("llama.cpp", total=None)

        def report(what: str, done: int | None, total: int | None) -> None:
            counts = {"completed": done, "total": total} if total else {}
            progress.update(task, description=what, **counts)

        chain = llamacpp_toolchain.setup(jobs, report, log)
    out.print(f"llama.cpp toolchain: {chain.root}  [dim](log: {log_path})[/]")


def _env_command(name: str) -> None:
    def setup_env() -> None:
        from pipeline.tools import environments

        env = environments.get(name)
        log_path = env.setup_log
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if not env.ready():
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
            with (
                open(log_path, "w", buffering=1) as log,
                Progress(*columns, console=console, disable=STATE["quiet"], transient=True) as progress,
            ):
                task = progress.add_task(name, total=None)
                env.ensure(lambda m: (progress.update(task, description=escape(m)), log.write(f"# {m}\n")), log)
        info = env.info()
        out.print(
            f"{name} environment: {env.home}  [dim]({escape(' '.join(info['requirements']))}; "
            f"built in {info['seconds']} s; log: {log_path})[/]"
        )

    setup_env.__doc__ = f"Create {name}'s own Python environment (once per machine; runs are then able to use it)."
    setup_app.command(name)(setup_env)


def _register_env_commands() -> None:
    from pipeline.tools.environments import (
        ENVS,  # declarations only: nothing is imported from the environments themselves
    )

    for name in ENVS:
        _env_command(name)


_register_env_commands()


@app.command("twin")
def twin_cmd(
    arch: str = typer.Argument(
        ..., help="architecture: llama-3.1-8b, qwen2.5-7b, mistral-7b-v0.3, qwen3-8b, qwen3-30b-a3b, mixtral-8x7b"
    ),
    out_dir: Path = typer.Option(..., "--out", "-o", help="directory to write (replaced if it exists)"),
    layers: int | None = typer.Option(None, "--layers", "-l", min=1, help="decoder layers (default: the real model's)"),
    vocab: int | None = typer.Option(
        None, "--vocab", min=1, help="vocabulary size (default: the real model's; smaller for small tests)"
    ),
    seed: int = typer.Option(0, "--seed"),
    experts: int | None = typer.Option(
        None, "--experts", min=1, help="experts per layer of a mixture-of-experts twin (default: the real model's)"
    ),
) -> None:
    """Write a random-weight "shape twin" of a real architecture: exact config and tensor shapes, a working
    tokenizer, safetensors shards. For memory, time and compatibility tests; it knows nothing."""
    from rich.progress import Progress

    from pipeline.devtools import twins

    if arch not in twins.ARCHS:
        raise RecipeError(f"unknown architecture {arch!r}; known: {', '.join(twins.ARCHS)}")
    n = layers or twins.ARCHS[arch]["num_hidden_layers"]
    with Progress(console=console, disable=STATE["quiet"], transient=True) as progress:
        task = progress.add_task(f"twin {arch}", total=None)
        info = twins.build(
            arch, n, out_dir, vocab, seed, lambda m: progress.update(task, description=f"twin {arch}: {m}"), experts
        )
    out.print(
        f"{arch} twin, {info['layers']} layers, vocab {info['vocab']}, {info['params'] / 1e9:.2f} B parameters "
        f"({info['active_params'] / 1e9:.2f} B active): {info['bytes'] / 1e9:.2f} "
        f"GB of bf16 weights in {out_dir} "
        "(random weights: for memory, time and compatibility tests, never quality)"
    )


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
