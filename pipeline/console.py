"""Terminal output (rich), per-stage log files, quiet libraries, and per-stage peak memory."""

from __future__ import annotations

import logging
import os
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
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
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    )


@dataclass
class StageContext:
    """What a stage function gets besides its inputs: a way to report progress, and recipe-wide flags.

    `report` shows a status line: the progress display when the stage runs in the runner's process,
    a pipe to the runner when it runs in a stage worker (pipeline.run.worker)."""

    stage_id: str
    report: Callable[[str], None] = lambda message: None
    trust_remote_code: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pipeline.graph.stage"))

    def status(self, message: str) -> None:
        self.log.info(message)
        self.report(message)


def progress_reporter(
    progress: Progress, task: Any, stage_id: str, suffix: Callable[[str], str] = lambda message: ""
) -> Callable[[str], None]:
    return lambda message: progress.update(
        task, description=f"[bold]{escape(stage_id)}[/]  {escape(message)}{suffix(message)}"
    )


class Eta:
    """A stage's estimate and the time left, corrected by its own progress: a status message that counts
    ("layer 3/24", "tensor 120/290", "chunk 2/4") replaces the estimate's guess of the fraction done
    with the measured one, so a stage running slower than estimated shows it at once."""

    COUNT = re.compile(r"(\d+)\s*/\s*(\d+)")

    def __init__(self, estimate_s: float | None, start: float):
        self.estimate_s, self.start = estimate_s, start

    def line(self, message: str) -> str:
        if self.estimate_s is None:
            return ""
        elapsed = time.perf_counter() - self.start
        counts = self.COUNT.findall(message)
        done, total = (int(counts[-1][0]), int(counts[-1][1])) if counts else (0, 0)
        if 0 < done <= total:
            left = elapsed * (total - done) / done
        else:
            left = max(self.estimate_s - elapsed, 0)
        return f"  [dim](est. {human_time(self.estimate_s)}, ETA {human_time(left)})[/]"


def log_to_file(path: Path, verbose: bool) -> logging.Handler:
    """Send every log record to the stage's log file (appending: the runner and its worker share it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if verbose and not any(
        isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers
    ):
        root.addHandler(logging.StreamHandler(sys.stderr))
    return handler


@contextmanager
def stage_log(path: Path, verbose: bool) -> Iterator[None]:
    """Everything logged while a stage runs goes to its own file (and to the console with -v)."""
    root = logging.getLogger()
    old_level, old_handlers = root.level, list(root.handlers)
    handler = log_to_file(path, verbose)
    try:
        yield
    finally:
        for h in root.handlers[:]:
            if h not in old_handlers:
                root.removeHandler(h)
        root.setLevel(old_level)
        handler.close()


class RunnerMemory:
    """Peak resident memory of this (the runner's) process: per inline stage, and over the whole run.

    Linux lets a process reset its own high-water mark (clear_refs 5), which makes the figure per
    stage; the run's peak is kept across those resets. Stage workers are measured by wait4 instead."""

    def __init__(self) -> None:
        self.run_peak_mb = vmhwm_mb()

    @contextmanager
    def stage(self, result: dict[str, float]) -> Iterator[None]:
        self.run_peak_mb = max(self.run_peak_mb, vmhwm_mb())
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        try:
            yield
        finally:
            result["peak_rss_mb"] = vmhwm_mb()
            self.run_peak_mb = max(self.run_peak_mb, result["peak_rss_mb"])

    def peak_mb(self) -> float:
        return max(self.run_peak_mb, vmhwm_mb())


def vmhwm_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def human_time(seconds: float) -> str:
    if seconds < 0.5:
        return "<1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
