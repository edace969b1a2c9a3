"""Stage workers: every heavy stage runs in a fresh process, forked for it by the run's zygote
(pipeline.run.zygote, which imports torch and transformers once for all of them).

Its memory goes back to the system when it ends, its peak memory is its own (wait4), and library
global state (loguru sinks, torch threads, transformers caches, llm-compressor's session) cannot
leak into the next stage. The runner keeps the plan, cache, lock, progress display and manifest.

A job (JSON) is the stage as data (pipeline.graph.stage.Stage.job: kind, config, input keys and
paths, key) with the temp output dir and the log. The worker checks that the files the stage reads
still have their planned digests (pipeline.stages.check_job; it never rebuilds the plan), runs the
kind's module into the temp dir and reports {"status": ...} while it works, then
{"done": info} or {"error": one line, "bad_input": bool}. Its stdout and stderr (library bars,
prints) go to the stage's log file, or to the terminal with -v. The runner alone renames the output
into place.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.console import StageContext, log_to_file, quiet_libraries
from pipeline.errors import RecipeError, one_line
from pipeline.tools.processes import set_parent_death_signal

STOP_GRACE_S = 20.0  # a worker asked to stop: time to stop its tools (a vLLM server takes the longest)


@dataclass
class WorkerResult:
    info: dict[str, Any] | None
    error: str | None
    bad_input: bool
    peak_rss_mb: float | None


class Workers:
    """The runner's side: one zygote per run, started on the first heavy stage (a cached rerun starts none)."""

    def __init__(self, log_dir: Path, verbose: bool) -> None:
        self.log_dir, self.verbose = log_dir, verbose
        self.zygote: subprocess.Popen | None = None
        self.messages: Any = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(kill=exc[0] is not None)

    def run(self, job: dict[str, Any], on_status: Callable[[str], None]) -> WorkerResult:
        """Run one stage in a worker process; return what it reported and its peak RSS."""
        if self.zygote is None or self.zygote.poll() is not None:
            self._start()
        pid, final, end = None, {}, None
        try:
            self.zygote.stdin.write((json.dumps(job) + "\n").encode())  # type: ignore[union-attr]
            self.zygote.stdin.flush()  # type: ignore[union-attr]
            while end is None:
                line = self.messages.readline()
                if not line:  # the zygote itself died (killed by the OOM killer, ...)
                    end = {"exit": self.zygote.wait(), "maxrss_kb": None}
                    break
                msg = json.loads(line)
                if "pid" in msg:
                    pid = msg["pid"]
                elif "status" in msg:
                    on_status(str(msg["status"]))
                elif "exit" in msg:
                    end = msg
                else:
                    final = msg
        except BaseException:  # Ctrl-C or an error here: the worker must not outlive the stage's temp dir
            self._stop_worker(pid)
            raise
        code, maxrss = end["exit"], end["maxrss_kb"]
        peak = (
            round(maxrss / 1024, 1) if maxrss else None
        )  # the worker and the tools it waited for (llama-quantize, ...)
        if "done" in final and code == 0:
            return WorkerResult(final["done"], None, False, peak)
        if "error" in final:
            return WorkerResult(None, final["error"], bool(final.get("bad_input")), peak)
        return WorkerResult(None, _death(code, Path(job["log"])), False, peak)

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "workers.log", "ab") as log:  # the zygote's own output: import-time warnings
            out = None if self.verbose else log
            try:
                self.zygote = subprocess.Popen(
                    [sys.executable, "-m", "pipeline.run.zygote"],
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=out,
                    pass_fds=(write_fd,),
                    env={
                        **os.environ,
                        "PIPELINE_WORKER_FD": str(write_fd),
                        "PIPELINE_RUNNER_PID": str(os.getpid()),
                        "PIPELINE_WORKER_VERBOSE": "1" if self.verbose else "0",
                    },
                )
            finally:
                os.close(write_fd)
        self.messages = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")

    def _stop_worker(self, pid: int | None) -> None:
        """Stop the stage's worker: SIGTERM, which it turns into KeyboardInterrupt so that its own cleanup
        runs (tools stopped, the vLLM server's group stopped), STOP_GRACE_S to do it, then SIGKILL; wait
        until the zygote has reaped it. Without its pid, the zygote (a worker dies with its zygote)."""
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                if not self._await_exit(STOP_GRACE_S):
                    os.kill(pid, signal.SIGKILL)
                    self._await_exit(10)
            except (OSError, ValueError):
                pass
        self.close(kill=True)

    def _await_exit(self, seconds: float) -> bool:
        """Read the worker's last messages until the zygote reports its exit; False after `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and select.select([self.messages], [], [], left)[0]:
            line = self.messages.readline()
            if not line or "exit" in json.loads(line):
                return True
        return False

    def close(self, kill: bool = False) -> None:
        if self.zygote is None:
            return
        if kill:
            self.zygote.kill()
        else:
            self.zygote.stdin.close()  # type: ignore[union-attr]
        try:
            self.zygote.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.zygote.kill()
            self.zygote.wait()
        self.messages.close()
        self.zygote = None


def job(plan: Any, stage: Any, tmp: Path, log_path: Path, verbose: bool) -> dict[str, Any]:
    """The stage as data (Plan.job) and where this attempt writes: the temp output dir and the log."""
    return {**plan.job(stage), "out": str(tmp), "log": str(log_path), "verbose": verbose}


def _death(code: int, log_path: Path) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        why = " (out of memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"the stage's worker process was killed by {name}{why}; log: {log_path}"
    return f"the stage's worker process exited with {code} without a result; log: {log_path}"


def die_with(parent_pid: int) -> None:
    """A worker outlives nothing: if its parent is killed (SIGKILL, a timeout), the kernel kills it too,
    instead of leaving an orphan computing into a stage nobody will publish. Runner -> zygote -> worker."""
    if set_parent_death_signal(signal.SIGKILL) and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request was in place


def send_to(fd: int, msg: dict[str, Any]) -> None:
    data = (json.dumps(msg, default=str) + "\n").encode()
    while data:  # one writer at a time on the channel: the worker while it lives, then the zygote
        data = data[os.write(fd, data) :]


def serve(job: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> int:
    """The worker's side: run the job's stage, report over `send`; the exit code."""
    quiet_libraries(job["verbose"])
    log_to_file(Path(job["log"]), job["verbose"])
    try:
        # Not at the top: the zygote imports this module before it quiets the libraries, and what the
        # stages import reads its verbosity once, when imported.
        from pipeline import stages

        stages.check_job(job)  # re-hashes only the files this stage reads, never the whole recipe
        ctx = StageContext(job["stage"], lambda m: send({"status": m}), trust_remote_code=job["trust_remote_code"])
        info = stages.run_job(job, Path(job["out"]), ctx)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        logging.getLogger("pipeline.run.worker").error("%s", traceback.format_exc())
        send({"error": one_line(e), "bad_input": isinstance(e, RecipeError)})
        return 1
    send({"done": info})
    return 0
