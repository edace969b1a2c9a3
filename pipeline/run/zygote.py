"""The stage-worker launcher of one run: `python -m pipeline.run.zygote`, started by the runner on its first
heavy stage. It imports torch and transformers once, then forks a fresh worker process per stage.

Why: every worker importing torch, transformers and llm-compressor afresh cost 5-15 s of CPU, paid
~20 times by the demo recipe. A forked worker still has its own memory (returned when it ends),
its own peak (the zygote's wait4 reports it) and its own library state beyond those imports:
nothing ever runs in the zygote itself, so no torch thread pool, loguru sink or model exists to
leak into a fork. (Forking after `import torch` is what torch's own DataLoader workers do.)

Protocol: jobs arrive on stdin, one JSON object per line (pipeline.run.worker.job); for each, a forked
worker runs the stage and writes its messages to the channel fd, one JSON object per line (first
{"pid": ...}, then {"status": ...}s, then {"done": ...} or {"error": ...}); once it has ended the
zygote adds {"exit": exit code, "maxrss_kb": its peak}. Its stdin closing ends the zygote.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import sys
import traceback

from pipeline.console import quiet_libraries
from pipeline.run.worker import die_with, send_to, serve

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# What nearly every worker imports. Stages add their own (Stage.imports: llm-compressor, lm-eval).
PRELOAD = (
    "torch",
    "transformers",
    "transformers.modeling_utils",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "safetensors.torch",
)


# Never imported before a fork: importing bitsandbytes probes CUDA, and a CUDA context made in the zygote
# makes every forked worker fail on its first CUDA call ("Cannot re-initialize CUDA in forked subprocess").
# Their workers import them themselves.
FORK_UNSAFE = ("bitsandbytes",)


def preload(modules) -> None:
    for name in modules:
        if name not in sys.modules and name.split(".")[0] not in FORK_UNSAFE:
            try:
                importlib.import_module(name)
            except Exception:
                pass


def main() -> int:
    die_with(int(os.environ.pop("PIPELINE_RUNNER_PID")))
    channel = int(os.environ.pop("PIPELINE_WORKER_FD"))
    verbose = os.environ.pop("PIPELINE_WORKER_VERBOSE") == "1"
    # Ctrl-C (or a SIGTERM/SIGHUP to the whole process group) reaches the worker of the moment, which
    # stops its stage, and the runner, which stops the run and closes the zygote. Were the zygote to die
    # first, its worker would get SIGKILL (PR_SET_PDEATHSIG) before it could stop its own tools.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    quiet_libraries(verbose)  # before the imports: libraries read their verbosity once, when imported
    preload(PRELOAD)
    for line in sys.stdin:
        job = json.loads(line)
        preload(job.get("imports", ()))
        gc.freeze()  # what the imports made stays out of the workers' collections: fewer copied pages
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _worker(job, channel, verbose)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        _, status, usage = os.wait4(pid, 0)
        send_to(channel, {"exit": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss})
    return 0


def _worker(job: dict, channel: int, verbose: bool) -> int:
    import logging

    die_with(os.getppid())
    for sig in STOP_SIGNALS:  # each stops the stage as Ctrl-C does: its `finally` blocks stop its tools
        signal.signal(sig, _interrupt)
    _name_process(job["stage"])
    _give_back_freed_memory()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    if not verbose:  # the stage's own output (library bars, prints) goes to its log
        log = os.open(job["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
    send_to(channel, {"pid": os.getpid()})
    try:
        return serve(job, lambda msg: send_to(channel, msg))
    finally:
        logging.shutdown()  # os._exit follows: flush what the stage logged and printed
        sys.stdout.flush()
        sys.stderr.flush()


def _give_back_freed_memory(every_s: float = 1.0) -> None:
    """glibc keeps what a stage frees in its heaps, so the worker's RSS (and what the machine has left) only
    grows: torch frees thousands of megabyte-sized tensors per layer (AWQ's grid search over a MoE layer's
    experts) and the holes are reused only in part. On a 2-layer Qwen3-30B-A3B twin AWQ peaked at 7.19 GB
    this way and at 5.66 GB with malloc_trim once a second, in 85 s against 92 s (glibc told to mmap every
    allocation over 1 MB instead: 5.45 GB but 161 s). Not glibc: nothing to do."""
    import ctypes
    import threading
    import time

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return

    def loop() -> None:
        while True:
            time.sleep(every_s)
            trim(0)

    threading.Thread(target=loop, name="malloc-trim", daemon=True).start()


def _interrupt(signum: int, frame: object) -> None:
    for sig in STOP_SIGNALS:  # once: the stage's cleanup (stopping its tools) must not be interrupted in turn
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _name_process(stage_id: str) -> None:
    """`ps`, `top` and the tests see which stage a worker runs (Linux keeps 15 bytes of it)."""
    try:
        with open(f"/proc/{os.getpid()}/comm", "w") as f:
            f.write(stage_id[:15])
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
