"""OpenVINO as a tool: its environment, and the scripts that run in it (pipeline/tools/scripts).

optimum-intel 2.2 pins transformers<5.6 (llm-compressor needs 5.15-5.17), so export, NNCF weight
compression, scoring and openvino-genai all run from their own venv (pipeline.tools.environments), as children
over files and JSON; nothing of OpenVINO is imported into our process."""

from __future__ import annotations

import ast
import hashlib
import json
import select
import subprocess
from pathlib import Path
from typing import Any

from pipeline.errors import StageError
from pipeline.tools import environments, processes
from pipeline.tools.processes import run_logged

OPTIMUM_INTEL = "2.2.0"
OPENVINO = "2026.4.1"  # openvino-genai and openvino-tokenizers are versioned 2026.4.1.0 alongside
TORCH_CPU = "2.13.0+cpu"  # the export traces the model in torch; unpinned, pip pulls a 6 GB CUDA build
SCRIPTS = Path(__file__).parent / "scripts"
REQUEST_TIMEOUT_S = 3600  # one load, log-prob pass or speed run of the worker; past it, it is hung


@environments.register("openvino")
def environment() -> environments.ToolEnv:
    reqs = (f"optimum-intel[openvino]=={OPTIMUM_INTEL}", f"openvino-genai=={OPENVINO}.0")
    if environments.accelerator() == "cpu":
        reqs = (f"torch=={TORCH_CPU}", *reqs)
    # optimum-intel pulls torchvision, whose wheel here does not match CPU torch ("torchvision::nms does not
    # exist") and breaks `import transformers`' processor classes; text models need none of it.
    return environments.ToolEnv(
        "openvino", reqs, probe="optimum.intel.openvino, openvino_genai", remove=("torchvision",)
    )


def scripts_digest() -> str:
    """What the child scripts do, for cache keys: a hash of their syntax trees, so reformatting them or
    editing a comment reruns nothing, while any change of code does."""
    h = hashlib.sha256()
    for script in sorted(SCRIPTS.glob("openvino_*.py")):
        h.update(script.name.encode() + b"\0" + ast.dump(ast.parse(script.read_text())).encode() + b"\0")
    return h.hexdigest()[:16]


def require(report: environments.Report = lambda m: None) -> environments.ToolEnv:
    """The environment, created on first use (about a minute from the package index; `setup openvino` does it ahead)."""
    env = environments.get("openvino")
    if not env.ready():
        env.home.parent.mkdir(parents=True, exist_ok=True)
        with open(env.setup_log, "a") as log:
            env.ensure(report, log)
    return env


def convert(order: dict[str, Any], workdir: Path, report: environments.Report) -> dict[str, Any]:
    """Run one export/compress order (pipeline/tools/scripts/openvino_convert.py); its output goes to the stage log."""
    env = require(report)
    spec = workdir / ".openvino-order.json"
    spec.write_text(json.dumps(order))
    try:
        tail = run_logged([env.python, SCRIPTS / "openvino_convert.py", spec], env={"TOKENIZERS_PARALLELISM": "false"})
    finally:
        spec.unlink(missing_ok=True)
    return json.loads(tail[-1])


class Worker:
    """The child that holds one model (pipeline/tools/scripts/openvino_worker.py); one request at a time."""

    def __init__(self, model: Path, threads: int, log: Path) -> None:
        env = require()
        self._log = open(log, "a")
        self.proc = subprocess.Popen(
            [str(env.python), str(SCRIPTS / "openvino_worker.py"), str(model), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            preexec_fn=processes.dies_with_parent(),
        )

    def ask(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        if not select.select([self.proc.stdout], [], [], REQUEST_TIMEOUT_S)[0]:
            processes.stop(self.proc, grace=2)
            raise StageError(f"the OpenVINO worker gave no answer to {op!r} within {REQUEST_TIMEOUT_S} s; stopped it")
        line = self.proc.stdout.readline()
        if not line:
            raise StageError(f"the OpenVINO worker exited with {self.proc.wait()} (see {self._log.name})")
        answer = json.loads(line)
        if "error" in answer:
            raise StageError(f"OpenVINO: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask_quit()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                processes.stop(self.proc, grace=2)
        self._log.close()

    def ask_quit(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.write('{"op": "quit"}\n')
        self.proc.stdin.close()
