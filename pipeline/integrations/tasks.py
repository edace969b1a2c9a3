"""What every orchestrator integration runs: the plan, built once where the orchestrator builds its
graph (an Airflow DAG parse, a Prefect flow run, a Dask client), as data, one job per stage
(pipeline.graph.stage.Stage.job); each job run in whatever process or machine shares the workdir
(pipeline.run.single.run_job: no recipe, no plan); then the run's manifest and report.

Results are JSON: an orchestrator can pass them between processes, store and show them."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from pipeline import api
from pipeline.errors import StageError
from pipeline.graph.plan import Plan
from pipeline.recipe import TaskSettings
from pipeline.report import report
from pipeline.run import single
from pipeline.run.manifest import Manifest, StageRecord, relative

safe_id = single.safe_id


def install_hint(extra: str, module: str) -> str:
    return f"the {extra.capitalize()} integration needs {module}: pip install 'llm-quant-pipeline[{extra}]'"


def plan_jobs(
    recipe: str | Path, workdir: str | Path, formats: list[str] | None = None
) -> tuple[Plan, list[dict[str, Any]]]:
    """The plan (validated and priced: bad input fails here, before any task) and its stages as jobs, in
    dependency order: every job's `deps` are jobs earlier in the list."""
    plan = api.plan(Path(recipe).resolve(), Path(workdir).resolve(), formats or None)
    return plan, [plan.job(s) for s in plan.stages]


def task_settings(plan: Plan, kind: str, overrides: dict[str, dict[str, Any]] | None = None) -> TaskSettings:
    """The recipe's orchestration settings for a stage kind, with the caller's overrides on top."""
    given = plan.recipe.orchestration.for_kind(kind)
    extra = (overrides or {}).get(kind) or {}
    return TaskSettings(**{**given.model_dump(), **extra})


def run_stage(job: dict[str, Any]) -> dict[str, Any]:
    """One orchestrator task: run (or reuse) the job's stage; raise if it fails, so that the orchestrator
    marks the task failed (and retries it, when told to)."""
    started = time.time()
    record = single.run_job(job)
    if record["status"] not in ("done", "cached"):
        raise StageError(f"{job['stage']}: {record['status']}: {record.get('error') or ''}".strip())
    # Where it ran: with a distributed runner each task runs in its own process, maybe on its own machine.
    return {
        "stage": job["stage"],
        "status": record["status"],
        "key": job["key"],
        "path": job["path"],
        "ran_on": {"host": socket.gethostname(), "pid": os.getpid(), "started": started, "ended": time.time()},
    }


def finish(recipe: str | Path, workdir: str | Path, formats: list[str] | None = None) -> dict[str, Any]:
    """The run's manifest (and results table) as a CLI run would leave it: each stage as its latest task left it
    (done, cached, failed), a finished stage no task ran as cached, one that never ran as pending."""
    plan = api.plan(Path(recipe).resolve(), Path(workdir).resolve(), formats or None)
    name = api.manifest_name(formats)
    (plan.run_dir / "manifests").mkdir(parents=True, exist_ok=True)
    manifest = Manifest(plan, name)
    for stage in plan.stages:
        record = _task_record(plan, stage) or _cached_record(plan, stage)
        if record is not None:
            manifest.records.append(record)
    complete = len(manifest.records) == len(plan.stages)
    manifest.finish("failed" if manifest.failed() else "ok" if complete else "incomplete")
    if not formats:
        report.write(plan.run_dir)
    return {
        "status": manifest.status,
        "manifest": str(manifest.path),
        "stages": {r.id: r.status for r in manifest.records},
        "failed": {r.id: r.error or r.status for r in manifest.failed()},
    }


def _cached_record(plan: Plan, stage: Any) -> StageRecord | None:
    """A stage finished by another run (a CLI run, an earlier flow): cached, linked, judged by its gates."""
    if not plan.cached(stage):
        return None
    job = plan.job(stage)
    info = single.read_info(job)
    record = StageRecord(stage.id, stage.kind, stage.artifact, stage.key, relative(stage.path, plan.run_dir), "cached")
    record.info, record.seconds, record.peak_rss_mb = info, (info or {}).get("seconds"), (info or {}).get("peak_rss_mb")
    single.link(job)
    problems = single.gate_failures(job, info)
    if problems:
        record.status, record.error = "failed-gates", "; ".join(problems)
    return record


def _task_record(plan: Plan, stage: Any) -> StageRecord | None:
    """The record a task left for this stage at this key (pipeline.run.single.run_job), if any."""
    try:
        task = json.loads((plan.run_dir / "manifests" / f"{safe_id(stage.id)}.json").read_text())
        if task["key"] != stage.key:
            return None
        return StageRecord(**task["stages"][0])
    except (OSError, ValueError, KeyError, TypeError):
        return None
