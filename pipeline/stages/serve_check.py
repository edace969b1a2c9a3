"""Serve-check stage, one per artifact vLLM loads and one for the base model: the artifact laid out as
its package (hard links, pipeline.stages.package.assemble) with the package's own vLLM config, started
in vLLM's environment (`vllm serve --config serving/vllm-cpu.yaml`, or vllm.yaml with CUDA), asked once
plainly and once streaming through the `openai` client, and stopped. A refusal (vLLM cannot load the
artifact here) is a result with its one-line reason, not a failed stage: the package and its card say it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.fingerprint import ARGS
from pipeline.stages.package import SERVE_CHECK, PackageJob, assemble
from pipeline.tools import environments, vllm_server

VERSION = 3  # 2: the root cause of a refusal, not the wrapper exception; 3: too slow to answer is a refusal


def config_name() -> str:
    return "vllm.yaml" if environments.accelerator() == "cuda" else "vllm-cpu.yaml"


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    return check(PackageJob.from_json(config[ARGS]["job"]), inputs, out, ctx)


def check(job: PackageJob, inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    layout = out / "package"
    artifact, _, _ = assemble(job, inputs, layout, ctx, targets=["vllm"])
    config = config_name()
    ctx.status(f"{vllm_server.engine_title()}: starting {job.artifact} from serving/{config}")
    result = vllm_server.serve_check(layout, config, artifact.served_model_name, out / "server.log")
    shutil.rmtree(layout)  # hard links to the artifact: nothing of its own; the result and the server's log stay
    (out / SERVE_CHECK).write_text(json.dumps(result, indent=2))
    ctx.status(f"{job.artifact}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))
    return result
