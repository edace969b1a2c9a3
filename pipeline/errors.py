"""The two kinds of failure the CLI tells apart: bad input (exit 2) and a stage that failed (exit 1),
and where in a recipe (or catalogue) file a bad field is."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class RecipeError(Exception):
    """Bad input: a malformed or infeasible recipe. Shown as one line, exit code 2, nothing written."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | tuple = ()):
        self.file, self.line, self.message = file, line, message
        self.loc = tuple(field.split(".")) if isinstance(field, str) else tuple(field)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{dotted(self.loc)}: " if self.loc else ""
        return f"{where}{field}{self.message}"


def dotted(loc: tuple) -> str:
    """('formats', 0, 'group_size') -> 'formats[0].group_size'"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM (`timeout`, a CI cancel, an orchestrator killing its task) or SIGHUP (a closed
    terminal): all stop a run the same way (stage stopped, its children stopped, temp dir removed,
    manifest marked interrupted). The process then exits 128 + the signal: 130, 143, 129."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code_of(e: BaseException) -> int:
    """The exit code for an interruption, found through the exceptions that wrapped it (click's Abort)."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, Interrupted):
            return seen.exit_code
        seen = seen.__cause__ or seen.__context__
    return interrupted_exit_code()


_received: list[int] = []  # the stop signals this process got, in order


def _raise_interrupted(signum: int, frame: object) -> None:
    _received.append(signum)
    if len(_received) > 1:  # the stop is under way: a second Ctrl-C must not cut its cleanup short
        return
    raise Interrupted(signum)


def interrupted_exit_code() -> int:
    """128 + the first stop signal this process received (130 when none was: a KeyboardInterrupt raised
    some other way); for where the Interrupted itself was swallowed (click turns it into exit 130)."""
    return 128 + _received[0] if _received else 130


@contextmanager
def interruptible() -> Iterator[None]:
    """While inside, SIGINT, SIGTERM and SIGHUP raise Interrupted (the previous handlers come back after).
    Only the main thread can set handlers: elsewhere (an orchestrator's task thread) this does nothing,
    and children still die with the process (pipeline.tools.processes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()  # a new run (an API caller's second one) is interruptible again
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StageError(Exception):
    """A stage failed for a reason we can state in one line (the log file has the details)."""


def one_line(e: BaseException) -> str:
    """A failure as the one line the user sees; the stage log has the traceback."""
    text = " ".join(str(e).split())
    text = text if len(text) <= 400 else text[:400] + "..."
    return text if isinstance(e, (StageError, RecipeError)) else f"{type(e).__name__}: {text}"


def line_of(path: str | Path, loc: tuple) -> int | None:
    """Line in the recipe file of the field at `loc` (for errors found after parsing, e.g. by plan)."""
    try:
        node = yaml.compose(Path(path).read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return None
    return node_line(node, loc, want_key=False) if node is not None and loc else None


def node_line(node: yaml.Node, loc: tuple, want_key: bool) -> int | None:
    """Line of the YAML node at `loc`; for an unknown key, the key's own line."""
    line = node.start_mark.line + 1
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == part), None)
            if hit is None:
                continue  # a pydantic-only step (a union tag): stay on this node
            if want_key and i == len(loc) - 1:
                return hit[0].start_mark.line + 1
            node = hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line
