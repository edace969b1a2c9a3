"""A Prefect 3 flow built from a recipe: one task per stage, each format's quantize/evaluate chain
on its own branch, so a distributed task runner (prefect-dask's DaskTaskRunner, prefect-ray's
RayTaskRunner) can put branches on different machines that share the workdir.

    from pipeline.integrations.prefect import build_flow
    flow = build_flow("recipes/smollm2-demo.yaml", workdir="runs")
    flow()                                   # or flow.with_options(task_runner=DaskTaskRunner(...))()

Task results are the stages' cache keys and paths; a retried or rerun task finds its stage cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import RecipeError
from pipeline.integrations import tasks


def _prefect() -> Any:
    try:
        import prefect
    except ImportError:
        raise RecipeError(tasks.install_hint("prefect", "Prefect 3")) from None
    return prefect


def build_flow(recipe: str | Path, workdir: str | Path = "runs", task_runner: Any = None, retries: int = 0) -> Any:
    """The recipe's flow (validated now: a bad recipe fails here, not inside a worker)."""
    prefect = _prefect()
    from prefect.task_runners import ProcessPoolTaskRunner  # stages hold global library state: one process each

    recipe, workdir = str(Path(recipe).resolve()), str(Path(workdir).resolve())
    plan = tasks.load_plan(recipe, workdir)
    stages = [(s.id, list(s.deps)) for s in plan.stages]
    run_stage = prefect.task(tasks.run_stage, retries=retries)
    finish = prefect.task(tasks.finish, name="results")

    @prefect.flow(
        name=f"llm-quant-{plan.recipe.name}",
        task_runner=task_runner or ProcessPoolTaskRunner(max_workers=2),
        log_prints=True,
    )
    def quantize_flow() -> dict[str, Any]:
        futures: dict[str, Any] = {}
        for stage_id, deps in stages:  # in dependency order: every upstream future exists already
            futures[stage_id] = run_stage.with_options(name=stage_id, task_run_name=stage_id).submit(
                recipe, workdir, stage_id, wait_for=[futures[d] for d in deps]
            )
        for f in futures.values():
            f.wait()
        failed = {k: str(f.state.message) for k, f in futures.items() if not f.state.is_completed()}
        summary = finish.submit(recipe, workdir, wait_for=[]).result()
        return {**summary, "tasks": {k: f.result() for k, f in futures.items() if k not in failed}, "failed": failed}

    return quantize_flow
