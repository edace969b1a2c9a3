"""External tools (llama.cpp's converter and binaries) run as child processes with their output in the stage log."""

from __future__ import annotations

import logging
import os
import subprocess
from collections import deque
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import StageError

log = logging.getLogger("pipeline.tool")


def run_logged(
    cmd: list[str | Path],
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
) -> list[str]:
    """Run `cmd`; every output line goes to the stage log (and to `on_line`). Returns the last lines.

    A failure raises StageError with the tool's last meaningful line. Ctrl-C or any error here kills
    the child: a tool left running could keep writing into a directory we are about to delete."""
    args = [str(c) for c in cmd]
    log.info("$ %s", " ".join(args))
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    try:
        for line in proc.stdout:
            line = line.rstrip()
            log.info("%s", line)
            tail.append(line)
            if on_line:
                on_line(line)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code:
        reason = next(
            (t for t in reversed(tail) if "error" in t.lower() or "failed" in t.lower()), tail[-1] if tail else ""
        )
        tool = Path(args[1] if Path(args[0]).name.startswith("python") else args[0]).name
        raise StageError(f"{tool} exited with {code}: {reason.strip()}")
    return list(tail)


def run_to_file(cmd: list[str], log, env: dict | None = None) -> None:
    """Run a setup step (a build, a pip install) with its output written to the open file `log`; a
    failure raises RuntimeError naming the step and its last non-empty line."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log.write(proc.stdout)
    if proc.returncode:
        tail = [line for line in proc.stdout.strip().splitlines() if line.strip()][-1:] or [""]
        raise RuntimeError(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} failed (exit {proc.returncode}): {tail[0]}")
