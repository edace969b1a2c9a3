"""The one process-lifetime rule: a child dies with its parent, stopping one reaps it, a hung tool times out."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.errors import StageError
from pipeline.tools import processes
from pipeline.tools.processes import run_logged


def alive(pid: int) -> bool:
    """Running (a zombie has exited: it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_tool_dies_with_the_process_that_ran_it(tmp_path):
    """A stage worker SIGKILLed mid-tool (the OOM killer, a runner that could not wait) leaves no tool
    computing: run_logged's child carries a parent-death signal."""
    pidfile = tmp_path / "tool.pid"
    script = textwrap.dedent(f"""
        from pipeline.tools.processes import run_logged
        run_logged(["bash", "-c", "echo $$ > {pidfile}; exec sleep 300"])
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not (pidfile.is_file() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    tool = int(pidfile.read_text())
    assert alive(tool)
    parent.kill()
    parent.wait()
    assert wait_gone(tool), "the tool outlived its SIGKILLed parent"


def test_a_hung_tool_is_stopped_at_its_timeout():
    start = time.monotonic()
    with pytest.raises(StageError, match=r"sleep ran past its timeout of 1 s"):
        run_logged(["sleep", "60"], timeout=1)
    assert time.monotonic() - start < 10


def test_a_failing_tool_names_its_last_error_line():
    with pytest.raises(StageError, match=r"bash exited with 3: error: no such tensor"):
        run_logged(["bash", "-c", "echo loading; echo 'error: no such tensor'; echo bye; exit 3"])


def test_stopping_a_group_stops_members_left_behind_by_their_leader():
    """vLLM's API server can exit while its engine core still runs: the group is stopped even then."""
    leader = subprocess.Popen(
        ["bash", "-c", "sleep 300 & echo $!; exit 0"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    orphan = int(leader.stdout.readline())
    leader.wait()
    assert alive(orphan)
    processes.stop(leader, group=True, grace=2)
    assert wait_gone(orphan), "the group's remaining member survived stop()"


def _sleeper(on_sigterm: str) -> subprocess.Popen:
    """A child that sets its SIGTERM handler to `on_sigterm`, says ready, and sleeps."""
    child = subprocess.Popen(
        [sys.executable, "-c", f"import signal,sys,time; signal.signal(signal.SIGTERM, {on_sigterm}); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    child.stdout.readline()
    return child


def test_stop_gives_sigterm_first_then_sigkill(tmp_path):
    """A child that handles SIGTERM gets to clean up; one that ignores it is killed after the grace period."""
    polite = _sleeper("lambda *a: sys.exit(7)")
    processes.stop(polite, grace=5)
    assert polite.returncode == 7
    stubborn = _sleeper("signal.SIG_IGN")
    start = time.monotonic()
    processes.stop(stubborn, grace=1)
    assert stubborn.returncode == -signal.SIGKILL and time.monotonic() - start < 5
    assert not Path(f"/proc/{stubborn.pid}").exists()  # reaped: no zombie left


def test_a_child_whose_parent_died_before_the_death_signal_was_set_dies_at_once():
    """The fork/parent-death race: the request is made in the child, after the fork; if the process that
    started it is already gone, no signal would ever come. Here the preexec function was made by this
    process, but runs in a grandchild (its parent is another process): it must kill itself."""
    import os

    preexec = processes.dies_with_parent(signal.SIGTERM)
    pid = os.fork()
    if pid == 0:  # the child: fork a grandchild that runs the preexec function, report how it ended
        grandchild = os.fork()
        if grandchild == 0:
            preexec()
            os._exit(0)  # only reached when preexec did not act
        _, status = os.waitpid(grandchild, 0)
        os._exit(100 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 100 + signal.SIGTERM
    # With its real parent alive, the same function only arms the signal.
    proc = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=processes.dies_with_parent(signal.SIGTERM))
    assert proc.returncode == 0
