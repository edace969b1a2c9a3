"""Stage workers: a heavy stage runs in a fresh Python process, `python -m pipeline.worker STAGE_ID`.

Its memory goes back to the system when it ends, its peak memory is its own (wait4), and library
global state (loguru sinks, torch threads, transformers caches, llm-compressor's session) cannot
leak into the next stage. The runner keeps the plan, cache, lock, progress display and manifest.

Protocol: the runner writes a job (JSON) to the worker's stdin: the recipe as validated, the stage
id and key, the temp output dir and the input dirs. The worker rebuilds the plan from that recipe,
checks the stage's key is the one the runner planned, runs the stage function into the temp dir
and reports over a pipe, one JSON object per line: {"status": ...} while it works, then {"done": info}
or {"error": one line, "bad_input": bool}. Its stdout and stderr (library bars, prints) go to the
stage's log file, or to the terminal with -v. The runner alone renames the output into place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import RecipeError, StageError, one_line


@dataclass
class WorkerResult:
    info: dict[str, Any] | None
    error: str | None
    bad_input: bool
    peak_rss_mb: float | None


def run(job: dict[str, Any], log_path: Path, verbose: bool, on_status: Callable[[str], None]) -> WorkerResult:
    """Run one stage in a worker process; return what it reported and its peak RSS."""
    read_fd, write_fd = os.pipe()
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.worker", job["stage"]], stdin=subprocess.PIPE,
                                stdout=None if verbose else log, stderr=None if verbose else log, pass_fds=(write_fd,),
                                env={**os.environ, "PIPELINE_WORKER_FD": str(write_fd), "PIPELINE_RUNNER_PID": str(os.getpid())})
    finally:
        os.close(write_fd)
        log.close()
    final: dict[str, Any] = {}
    try:
        proc.stdin.write(json.dumps(job).encode())  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as messages:
            for line in messages:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "status" in msg:
                    on_status(str(msg["status"]))
                else:
                    final = msg
                    break  # a grandchild holding the pipe open must not keep us waiting
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # Ctrl-C or an error here: the worker must not outlive the stage's temp dir
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = round(usage.ru_maxrss / 1024, 1)  # the worker and the tools it waited for (llama-quantize, ...)
    if "done" in final and proc.returncode == 0:
        return WorkerResult(final["done"], None, False, peak)
    if "error" in final:
        return WorkerResult(None, final["error"], bool(final.get("bad_input")), peak)
    return WorkerResult(None, _death(proc.returncode, log_path), False, peak)


def _death(code: int, log_path: Path) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        why = " (out of memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"the stage's worker process was killed by {name}{why}; log: {log_path}"
    return f"the stage's worker process exited with {code} without a result; log: {log_path}"


def die_with_runner(runner_pid: int) -> None:
    """A worker outlives nothing: if the runner is killed (SIGKILL, a timeout), the kernel kills its
    worker too, instead of leaving an orphan computing into a stage nobody will publish."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        return
    if os.getppid() != runner_pid:  # the runner died before the request was in place
        os._exit(1)


def main() -> int:
    die_with_runner(int(os.environ.pop("PIPELINE_RUNNER_PID", os.getppid())))
    channel = os.fdopen(int(os.environ.pop("PIPELINE_WORKER_FD")), "w", buffering=1, encoding="utf-8")

    def send(msg: dict[str, Any]) -> None:
        channel.write(json.dumps(msg, default=str) + "\n")

    job = json.loads(sys.stdin.read())
    from pipeline.console import StageContext, log_to_file, quiet_libraries

    quiet_libraries(job["verbose"])
    log_to_file(Path(job["log"]), job["verbose"])
    try:
        from pipeline.plan import build_plan
        from pipeline.recipe import Recipe

        recipe = Recipe.model_validate(job["recipe"])
        plan = build_plan(recipe, Path(job["recipe_path"]), Path(job["workdir"]), job["with_calibration"], job["with_publish"])
        stage = plan.stage(job["stage"])
        if stage.key != job["key"]:
            raise StageError(f"{stage.id}: its inputs changed since the run was planned (a source or data file was modified mid-run); rerun")
        ctx = StageContext(stage.id, lambda m: send({"status": m}), trust_remote_code=recipe.model.trust_remote_code)
        info = stage.run(Path(job["out"]), {k: Path(v) for k, v in job["inputs"].items()}, ctx)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - reported to the runner as one line; the traceback goes to the log
        import logging

        logging.getLogger("pipeline.worker").error("%s", traceback.format_exc())
        send({"error": one_line(e), "bad_input": isinstance(e, RecipeError)})
        return 1
    send({"done": info})
    return 0


if __name__ == "__main__":
    sys.exit(main())
