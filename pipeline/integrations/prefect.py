"""The Prefect 3 flow: `quantize_flow(recipe, workdir, formats)`, a module-level flow with parameters,
so a deployment points at it and the UI (or `run_deployment`) runs it with another recipe:

    from pipeline.integrations.prefect import quantize_flow
    quantize_flow("recipes/smollm2-demo.yaml", workdir="runs")          # here, now
    quantize_flow.serve("llm-quant")                                   # or deploy it: one deployment, any recipe
    # prefect deploy pipeline/integrations/prefect.py:quantize_flow ...

The flow plans once (a bad recipe fails the flow run before any task, naming the field), then submits
one task per stage, each waiting for exactly its inputs' tasks and carrying its stage's job
(pipeline.graph.stage.Stage.job), run by whatever task runner the flow has: a process pool here,
prefect-dask's DaskTaskRunner or prefect-ray's RayTaskRunner over machines that share the workdir.
A task's cache key is its stage's key, once the stage's output is finished (Prefect then skips it;
a deleted output is rebuilt). Retries, retry delay and timeout come per stage kind from the recipe's
`orchestration` section (`retries` here overrides them all). The flow run ends Failed when a stage
failed; its manifest and report are written either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import RecipeError
from pipeline.files import is_finished
from pipeline.integrations import tasks

try:
    import prefect
    from prefect.states import Failed
    from prefect.task_runners import ProcessPoolTaskRunner
except ImportError:
    raise RecipeError(tasks.install_hint("prefect", "Prefect 3")) from None


def _stage_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """The stage's key once its output is finished; before that (or after it was deleted), no cache."""
    job = parameters["job"]
    return f"llm-quant-{job['key']}" if is_finished(Path(job["path"]), job["key"]) else None


@prefect.task(name="stage", cache_key_fn=_stage_cache_key, persist_result=True)
def stage_task(job: dict[str, Any]) -> dict[str, Any]:
    return tasks.run_stage(job)


@prefect.task(name="results", task_run_name="results")
def results_task(recipe: str, workdir: str, formats: list[str] | None) -> dict[str, Any]:
    return tasks.finish(recipe, workdir, formats)


# Stages hold global library state (torch threads, llm-compressor's session): a process per task.
@prefect.flow(name="llm-quant", task_runner=ProcessPoolTaskRunner(max_workers=2), log_prints=True)
def quantize_flow(
    recipe: str, workdir: str = "runs", formats: list[str] | None = None, retries: int | None = None
) -> Any:
    """Quantize, evaluate and package every format of `recipe` (or only `formats`) into `workdir`."""
    plan, jobs = tasks.plan_jobs(recipe, workdir, formats)
    futures: dict[str, Any] = {}
    for job in jobs:  # in dependency order: every upstream future exists already
        settings = tasks.task_settings(plan, job["kind"])
        timeout = settings.timeout_minutes * 60 if settings.timeout_minutes else None
        futures[job["stage"]] = stage_task.with_options(
            task_run_name=job["stage"],
            retries=settings.retries if retries is None else retries,
            retry_delay_seconds=settings.retry_delay_s or 0,
            timeout_seconds=timeout,
        ).submit(job, wait_for=[futures[d] for d, _ in job["deps"]])
    for future in futures.values():
        future.wait()
    summary = results_task(str(Path(recipe).resolve()), str(Path(workdir).resolve()), formats)
    summary["tasks"] = {k: f.result() for k, f in futures.items() if f.state.is_completed()}
    if summary["status"] != "ok":
        failed = ", ".join(f"{k} ({v})" for k, v in summary["failed"].items()) or "stages did not run"
        return Failed(message=f"{summary['status']}: {failed}", data=summary)
    return summary
