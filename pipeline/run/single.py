"""One stage from its job (pipeline.graph.stage.Stage.job): what the runner does for every stage it
builds, and all an orchestrator task (Airflow, Prefect, Dask) does, in whatever process or on whatever
machine shares the workdir, without the recipe or the plan.

The output is built in a temp dir and renamed into place (pipeline.run.cache), heavy stages in a
fresh worker process (pipeline.run.worker), light ones (`inline`) here; then its stable link and its
quality gates. A task's record goes to `manifests/<stage>.json`, which `finish` gathers into the
run's manifest."""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any

from pipeline import stages
from pipeline.console import RunnerMemory, StageContext, stage_log
from pipeline.errors import RecipeError, StageError, interruptible, one_line
from pipeline.evaluation import gates as quality_gates
from pipeline.files import INFO, is_finished, write_json_atomic
from pipeline.recipe import GatesSpec
from pipeline.run import worker
from pipeline.run.cache import atomic_stage, run_lock


def log_path(job: dict[str, Any]) -> Path:
    return Path(job["run_dir"]) / "logs" / f"{job['label']}.log"


def build(
    job: dict[str, Any], workers: worker.Workers, report, memory: RunnerMemory | None = None
) -> tuple[dict[str, Any], float | None]:
    """Build the stage's output (its info, and its peak RSS in MB); raise StageError or RecipeError."""
    run_dir, log, start = Path(job["run_dir"]), log_path(job), time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")  # this attempt's log; the runner and the worker both append to it
    with (
        stage_log(log, workers.verbose),
        atomic_stage(run_dir, job["label"], job["key"], {"stage": job["stage"]}) as tmp,
    ):
        if job["inline"]:
            mem: dict[str, float] = {}
            with (memory or RunnerMemory()).stage(mem):  # fills `mem` as it ends
                stages.check_job(job)
                ctx = StageContext(job["stage"], report, trust_remote_code=job["trust_remote_code"])
                info = stages.run_job(job, tmp, ctx)
            peak = mem.get("peak_rss_mb")
        else:
            result = workers.run({**job, "out": str(tmp), "log": str(log), "verbose": workers.verbose}, report)
            if result.error is not None:
                error = (RecipeError if result.bad_input else StageError)(result.error)
                error.peak_rss_mb = result.peak_rss_mb  # type: ignore[attr-defined]
                raise error
            info, peak = result.info or {}, result.peak_rss_mb
        info.setdefault("seconds", round(time.perf_counter() - start, 2))  # kept with the output: cards cite it
        info["peak_rss_mb"] = peak
        (tmp / INFO).write_text(json.dumps(info, indent=2, default=str))
    return info, peak


def keep_traceback(job: dict[str, Any], e: BaseException) -> None:
    """A crash's traceback in the stage's log (a worker writes its own; an inline stage's is here)."""
    if not isinstance(e, (StageError, RecipeError)) or job["inline"]:
        with open(log_path(job), "a") as f:
            f.write(traceback.format_exc())


def read_info(job: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return json.loads((Path(job["path"]) / INFO).read_text())
    except (OSError, ValueError):
        return None


def link(job: dict[str, Any]) -> None:
    """Stable names for the newest outputs: <run>/source, <run>/artifacts/<name>, <run>/evaluation/<name>."""
    if not job["link"]:
        return
    name = Path(job["run_dir"]) / job["link"]
    name.parent.mkdir(parents=True, exist_ok=True)
    tmp = name.with_name(f".{name.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(job["path"], name.parent))
    os.replace(tmp, name)


def gate_failures(job: dict[str, Any], info: dict[str, Any] | None) -> list[str]:
    if not job["gates"] or not info:
        return []
    return quality_gates.failures(info, GatesSpec.model_validate(job["gates"]))


def safe_id(stage_id: str) -> str:
    """A file or task name orchestrators accept: letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stage_id).strip("_")


def run_job(job: dict[str, Any], force: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Run (or reuse) one stage from its job, as an orchestrator task does; its record (the manifest's
    fields: status, seconds, peak, error, info) is returned and kept in manifests/<stage>.json."""
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "id": job["stage"],
        "kind": job["kind"],
        "artifact": job["artifact"],
        "key": job["key"],
        "path": os.path.relpath(job["path"], run_dir),
        "status": "pending",
    }
    with interruptible(), run_lock(run_dir, shared=True):
        if not force and is_finished(Path(job["path"]), job["key"]):
            info = read_info(job)
            record.update(status="cached", info=info, seconds=(info or {}).get("seconds"))
        else:
            with worker.Workers(run_dir / "logs", verbose) as workers:
                try:
                    info, peak = build(job, workers, lambda message: None)
                    record.update(status="done", info=info, seconds=info["seconds"], peak_rss_mb=peak)
                except Exception as e:  # recorded as the runner records it: the task's record says why
                    record.update(status="failed", error=one_line(e), bad_input=isinstance(e, RecipeError))
                    record.update(log=os.path.relpath(log_path(job), run_dir))
                    keep_traceback(job, e)
        if record["status"] in ("done", "cached"):
            link(job)
            problems = gate_failures(job, record.get("info"))
            if problems:
                record.update(status="failed-gates", error="; ".join(problems))
    (run_dir / "manifests").mkdir(exist_ok=True)
    # `stages`, as in a run's manifest: `gc` keeps what a task built (pipeline.run.superseded)
    write_json_atomic(run_dir / "manifests" / f"{safe_id(job['stage'])}.json", {"key": job["key"], "stages": [record]})
    return record
