"""An Airflow 3 DAG built from a recipe: one task per stage, its upstream tasks exactly the stage's
inputs, then `results` (the run's manifest and report, whatever failed; it fails, and so the DAG run,
when a stage did).

    # dags/quantize_smollm2.py
    from pipeline.integrations.airflow import build_dag
    dag = build_dag("/srv/recipes/smollm2-demo.yaml", workdir="/srv/runs")

The plan is built when the scheduler parses the file (a bad recipe is a DAG import error naming the
field); each task carries its stage's job (pipeline.graph.stage.Stage.job) and runs it on whatever
worker takes it, with the workdir shared (pipeline.run.single.run_job): no task rebuilds the plan.
Retries, retry delay, timeout, queue and pool come per stage kind from the recipe's `orchestration`
section, then from `task_settings` here (`{"quantize": {"queue": "gpu"}}`), set on each task over
Airflow's own `default_args` (owner, email, ...). `dag.test()` runs it in one process for a check."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.errors import RecipeError, StageError
from pipeline.integrations import tasks


def build_dag(
    recipe: str | Path,
    dag_id: str | None = None,
    schedule: Any = None,
    workdir: str | Path = "runs",
    default_args: dict[str, Any] | None = None,
    task_settings: dict[str, dict[str, Any]] | None = None,
) -> Any:
    try:
        from airflow.sdk import DAG, task
    except ImportError:
        raise RecipeError(tasks.install_hint("airflow", "Apache Airflow 3")) from None
    recipe, workdir = str(Path(recipe).resolve()), str(Path(workdir).resolve())
    plan, jobs = tasks.plan_jobs(recipe, workdir)

    with DAG(
        dag_id=dag_id or f"llm_quant_{tasks.safe_id(plan.recipe.name)}",
        schedule=schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        default_args=default_args or {},
        tags=["llm-quant-pipeline"],
    ) as dag:

        @task
        def stage(job: str) -> dict[str, Any]:
            return tasks.run_stage(json.loads(base64.b64decode(job)))

        @task(trigger_rule="all_done")
        def results() -> dict[str, Any]:
            summary = tasks.finish(recipe, workdir)  # the manifest and report, whatever failed
            if summary["status"] != "ok":  # the DAG run fails with its stages, not only their tasks
                raise StageError(
                    f"run {summary['status']}: " + "; ".join(f"{k}: {v}" for k, v in summary["failed"].items())
                )
            return summary

        ops: dict[str, Any] = {}
        for job in jobs:
            options = _operator_args(tasks.task_settings(plan, job["kind"], task_settings))
            # Airflow renders every string a task is given as a Jinja template (and drops its trailing newline):
            # a job would not hash to its key any more, and a chat template in it would be rendered. Base64 has
            # nothing Jinja reads.
            packed = base64.b64encode(json.dumps(job).encode()).decode()
            ops[job["stage"]] = stage.override(task_id=tasks.safe_id(job["stage"]), **options)(packed)
            for dep, _ in job["deps"]:
                ops[dep] >> ops[job["stage"]]
        list(ops.values()) >> results()
    return dag


def _operator_args(settings: Any) -> dict[str, Any]:
    """The task's operator arguments from its settings (over default_args); what they leave open stays Airflow's."""
    out: dict[str, Any] = {}
    if settings.retries is not None:
        out["retries"] = settings.retries
    if settings.retry_delay_s is not None:
        out["retry_delay"] = timedelta(seconds=settings.retry_delay_s)
    if settings.timeout_minutes is not None:
        out["execution_timeout"] = timedelta(minutes=settings.timeout_minutes)
    if settings.queue:
        out["queue"] = settings.queue
    if settings.pool:
        out["pool"] = settings.pool
    return out
