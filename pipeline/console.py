"""Terminal output (rich), per-stage log files, quiet libraries, and per-stage peak memory."""

from __future__ import annotations

from rich.markup import escape

import logging
import os
import resource
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

# Piped output (CI logs, files) gets a wide fixed width: tables would otherwise be cut to 80 columns.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def quiet_libraries(verbose: bool) -> None:
    """Library progress bars and warnings would bury ours; -v lets them through."""
    if verbose:
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")


def stage_progress(quiet: bool) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, disable=quiet, transient=False)


@dataclass
class StageContext:
    """What a stage function gets besides its inputs: a way to report progress, and recipe-wide flags."""

    stage_id: str
    progress: Progress
    task: Any
    trust_remote_code: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pipeline.stage"))

    def status(self, message: str) -> None:
        self.log.info(message)
        self.progress.update(self.task, description=f"[bold]{escape(self.stage_id)}[/]  {message}")


@contextmanager
def stage_log(path: Path, verbose: bool) -> Iterator[None]:
    """Everything logged while a stage runs goes to its own file (and to the console with -v)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


@contextmanager
def peak_rss(result: dict[str, float]) -> Iterator[None]:
    """Peak resident memory (MB) while the block runs, this process and its children.

    Linux lets a process reset its own high-water mark (clear_refs 5), which makes the figure per
    stage rather than per process; elsewhere it is the process peak so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    try:
        yield
    finally:
        result["peak_rss_mb"] = round(max(_vmhwm_kb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024, 1)


def _vmhwm_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
