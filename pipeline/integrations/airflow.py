"""An Airflow 3 DAG built from a recipe with TaskFlow: one task per shared stage (source,
calibration, GGUF conversion, importance matrix, evaluation reference, ...), then one mapped task
per format that runs its branch (quantize, then evaluate), then the results.

    # dags/quantize_smollm2.py
    from pipeline.integrations.airflow import build_dag
    dag = build_dag("/srv/recipes/smollm2-demo.yaml", workdir="/srv/runs")

Mapped branches run in parallel on whatever executor Airflow uses (Celery, Kubernetes); the stage
cache makes retries and reruns cheap. `dag.test()` runs it in one process for a check."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.errors import RecipeError
from pipeline.integrations import tasks


def build_dag(recipe: str | Path, dag_id: str | None = None, schedule: Any = None, workdir: str | Path = "runs") -> Any:
    try:
        from airflow.sdk import DAG, task
    except ImportError:
        raise RecipeError(tasks.install_hint("airflow", "Apache Airflow 3")) from None
    recipe, workdir = str(Path(recipe).resolve()), str(Path(workdir).resolve())
    plan = tasks.load_plan(recipe, workdir)  # a bad recipe fails at DAG parse time, with the field named
    shared = [s for s in plan.stages if tasks.branch_of(s.id) is None]
    artifacts = [f.artifact for f in plan.recipe.formats]

    with DAG(
        dag_id=dag_id or f"llm_quant_{tasks.safe_id(plan.recipe.name)}",
        schedule=schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["llm-quant-pipeline"],
    ) as dag:

        @task
        def stage(stage_id: str) -> dict[str, Any]:
            return tasks.run_stage(recipe, workdir, stage_id)

        @task
        def branch(artifact: str) -> list[dict[str, Any]]:
            return tasks.run_branch(recipe, workdir, artifact)

        @task(trigger_rule="all_done")
        def results() -> dict[str, Any]:
            return tasks.finish(recipe, workdir)

        ops = {s.id: stage.override(task_id=tasks.safe_id(s.id))(s.id) for s in shared}
        for s in shared:
            for dep in s.deps:
                ops[dep] >> ops[s.id]
        branches = branch.expand(artifact=artifacts)  # one mapped task instance per format
        for s in shared:
            ops[s.id] >> branches
        branches >> results()
    return dag
