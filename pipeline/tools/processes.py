"""Child processes of the pipeline: one lifetime rule for all of them, and tools run with their output in
the stage log.

The rule: a child never outlives the process that started it. Each is started with a parent-death
signal (PR_SET_PDEATHSIG: the kernel signals it when its parent dies, SIGKILL included), and stopping
one is SIGTERM, a grace period, then SIGKILL, always followed by a wait (no zombie). A server in its
own process group (vLLM: API server, engine core, workers) is stopped as a group, even after its
leader has exited."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import StageError

log = logging.getLogger("pipeline.tool")

PR_SET_PDEATHSIG = 1
GRACE_S = 10.0  # from SIGTERM to SIGKILL: long enough for a server to stop its own children
# Generous by default (a 70B conversion takes hours); PIPELINE_TOOL_TIMEOUT_S changes it for every tool.
DEFAULT_TIMEOUT_S = 12 * 3600.0


def tool_timeout(default: float = DEFAULT_TIMEOUT_S) -> float:
    given = os.environ.get("PIPELINE_TOOL_TIMEOUT_S")
    return float(given) if given else default


def _find_prctl() -> Callable[..., int] | None:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Looked up once, here: a preexec_fn runs between fork and exec, where loading a library could deadlock.
_PRCTL = _find_prctl()


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux); False where it cannot."""
    return _PRCTL is not None and _PRCTL(PR_SET_PDEATHSIG, int(sig)) == 0


def dies_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn`: the child gets `sig` when the process (thread) that started it dies. SIGTERM for
    servers (they stop their own children on it), SIGKILL for tools. A parent that died between the fork
    and the request would never signal: the child then sends `sig` to itself at once."""
    parent = os.getpid()

    def preexec() -> None:
        if set_parent_death_signal(sig) and os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def stop(proc: subprocess.Popen, group: bool = False, grace: float = GRACE_S) -> None:
    """SIGTERM, `grace` seconds, SIGKILL; then reap. `group`: the child leads its own process group,
    which is signalled whole (its leader may be gone while the group's other members still run)."""

    def send(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    if proc.poll() is None or group:
        send(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        send(signal.SIGKILL)
    proc.wait()
    if group:
        _wait_group_gone(proc.pid, grace)


def _wait_group_gone(pgid: int, grace: float) -> None:
    import time

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# A guard of one process group: it waits for its stdin to close, which happens when the process that
# started it ends, however it ends (SIGKILL included, whichever thread started it); then it stops the
# group: SIGTERM, a grace period, SIGKILL. A server that catches SIGTERM and hangs in its own shutdown
# (vLLM's API server did, mid-start) still goes. Its own session: Ctrl-C to the run does not reach it.
_GUARD = """
import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
sys.stdin.buffer.read()
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False
if alive():
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive():
        os.killpg(pgid, signal.SIGKILL)
"""


def guard_group(pgid: int, grace: float = GRACE_S) -> subprocess.Popen:
    """Start the guard of process group `pgid` (see _GUARD); `release_guard` it after stopping the group."""
    return subprocess.Popen(
        [sys.executable, "-c", _GUARD, str(pgid), str(grace)], stdin=subprocess.PIPE, start_new_session=True
    )


def release_guard(guard: subprocess.Popen) -> None:
    """Close the guard's stdin: it stops whatever is left of its group (nothing, after a clean stop) and exits."""
    try:
        guard.stdin.close()  # type: ignore[union-attr]
    except OSError:
        pass
    guard.wait()


def run_logged(
    cmd: list[str | Path],
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Run `cmd`; every output line goes to the stage log (and to `on_line`). Returns the last lines.

    `cwd`: where it runs. A failure raises StageError with the tool's last meaningful line; so does
    running past `timeout` seconds (default: tool_timeout()). Ctrl-C, SIGTERM or any error here stops
    the child: a tool left running could keep writing into a directory we are about to delete."""
    # With `cwd`, Path arguments are made absolute (they were meant from here); str ones stay as given,
    # e.g. a file name relative to `cwd` that the tool records in its output.
    args = [str(c.absolute()) if cwd is not None and isinstance(c, Path) else str(c) for c in cmd]
    log.info("$ %s%s", " ".join(args), f"  (in {cwd})" if cwd else "")
    tail: deque[str] = deque(maxlen=40)
    limit = tool_timeout() if timeout is None else timeout
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env={**os.environ, **(env or {})},
        cwd=cwd,
        preexec_fn=dies_with_parent(),
    )
    timed_out = threading.Event()
    timer = threading.Timer(limit, lambda: (timed_out.set(), proc.kill()))  # a hung tool must not stall the run
    timer.daemon = True
    timer.start()
    try:
        for line in proc.stdout:
            line = line.rstrip()
            log.info("%s", line)
            tail.append(line)
            if on_line:
                on_line(line)
        code = proc.wait()
    except BaseException:
        stop(proc, grace=2)
        raise
    finally:
        timer.cancel()
    tool = Path(args[1] if Path(args[0]).name.startswith("python") else args[0]).name
    if timed_out.is_set():
        raise StageError(f"{tool} ran past its timeout of {limit:.0f} s and was stopped (PIPELINE_TOOL_TIMEOUT_S)")
    if code:
        reason = next(
            (t for t in reversed(tail) if "error" in t.lower() or "failed" in t.lower()), tail[-1] if tail else ""
        )
        raise StageError(f"{tool} exited with {code}: {reason.strip()}")
    return list(tail)


def run_to_file(cmd: list[str], log, env: dict | None = None) -> None:
    """Run a setup step (a build, a pip install) with its output written to the open file `log`; a
    failure raises RuntimeError naming the step and its last non-empty line."""
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=dies_with_parent()
    )
    log.write(proc.stdout)
    if proc.returncode:
        tail = [line for line in proc.stdout.strip().splitlines() if line.strip()][-1:] or [""]
        raise RuntimeError(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} failed (exit {proc.returncode}): {tail[0]}")
