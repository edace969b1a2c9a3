"""What every orchestrator integration runs: one stage of a plan, or the final results.

Plain functions of (recipe path, workdir, stage id) with JSON-able results, so that Prefect, Airflow
or any distributed worker can call them in another process or on another machine that sees the same
workdir. The plan is rebuilt in each task (cheap) rather than shipped between processes."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

from pipeline import api
from pipeline.errors import StageError
from pipeline.graph.plan import Plan
from pipeline.report import report
from pipeline.run.manifest import StageRecord
from pipeline.run.runner import execute
from pipeline.stage_id import StageId


def install_hint(extra: str, module: str) -> str:
    return f"the {extra.capitalize()} integration needs {module}: pip install 'llm-quant-pipeline[{extra}]'"


def load_plan(recipe: str | Path, workdir: str | Path) -> Plan:
    return api.plan(recipe, workdir)


def branch_of(stage_id: str) -> str | None:
    """The format a stage belongs to ("quantize[awq]" -> "awq"), or None for a shared stage."""
    sid = StageId.parse(stage_id)
    return sid.arg if sid.kind in ("quantize", "evaluate", "package", "publish") and sid.engine is None else None


def safe_id(stage_id: str) -> str:
    """A task id orchestrators accept: letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stage_id).strip("_")


def run_stage(recipe: str, workdir: str, stage_id: str) -> dict[str, Any]:
    """Run (or reuse) one stage; raise if it fails, so the orchestrator marks the task failed."""

    plan = load_plan(recipe, workdir)
    stage = plan.stage(stage_id)
    (plan.run_dir / "manifests").mkdir(parents=True, exist_ok=True)
    manifest = execute(
        plan, quiet=True, only={stage_id}, manifest_name=f"manifests/{safe_id(stage_id)}.json", shared_lock=True
    )
    record = manifest.records[0]
    if record.status not in ("done", "cached"):
        raise StageError(f"{stage_id}: {record.status}: {record.error or ''}".strip())
    # Where it ran: with a distributed task runner, each orchestrator worker is its own process or machine.
    return {
        "stage": stage_id,
        "status": record.status,
        "key": stage.key,
        "path": str(stage.path),
        "ran_on": {"host": socket.gethostname(), "pid": os.getpid()},
    }


def run_branch(recipe: str, workdir: str, artifact: str) -> list[dict[str, Any]]:
    """A format's branch, stage after stage (quantize, then evaluate when the recipe evaluates)."""
    plan = load_plan(recipe, workdir)
    return [run_stage(recipe, workdir, s.id) for s in plan.stages if branch_of(s.id) == artifact]


def finish(recipe: str, workdir: str) -> dict[str, Any]:
    """The run's manifest.json (and results table) as a CLI run would leave it: finished stages from the
    cache, and each stage that failed or was skipped in its own task with that task's record."""
    import json

    plan = load_plan(recipe, workdir)
    manifest = execute(plan, quiet=True, only={s.id for s in plan.stages if plan.cached(s)})
    order = {s.id: i for i, s in enumerate(plan.stages)}
    for s in plan.stages:
        if any(r.id == s.id for r in manifest.records):
            continue
        try:
            task = json.loads((plan.run_dir / "manifests" / f"{safe_id(s.id)}.json").read_text())
            record = next(StageRecord(**r) for r in task["stages"] if r["id"] == s.id and r["key"] == s.key)
        except (OSError, ValueError, KeyError, StopIteration, TypeError):
            continue  # never ran (an upstream task failed and the orchestrator did not start it): pending
        manifest.records.append(record)
    manifest.records.sort(key=lambda r: order[r.id])
    complete = len(manifest.records) == len(plan.stages)
    manifest.finish("failed" if manifest.failed() else "ok" if complete else "incomplete")
    report.write(plan.run_dir)
    return {
        "status": manifest.status,
        "manifest": str(manifest.path),
        "stages": {r.id: r.status for r in manifest.records},
    }
