"""The stages on a Dask distributed cluster: one Dask task per stage, each depending on exactly its
inputs' tasks, run on whichever worker is free; the workers share the workdir (NFS, a shared volume).

    from dask.distributed import Client
    from pipeline.integrations.dask import run_on_cluster
    summary = run_on_cluster("recipes/smollm2-demo.yaml", "/shared/runs", Client("tcp://scheduler:8786"))

Formats run side by side on different workers; a finished stage is never rebuilt (its task finds the
output in the cache and returns at once); a worker that dies mid-stage (killed, out of memory) takes
its stage's processes with it (PR_SET_PDEATHSIG), leaves only a temp dir no run takes for finished,
and Dask's scheduler runs that stage again on another worker (up to `retries` more times for a
failure that is not a death). The plan is built here, once; workers get jobs, never the recipe."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import RecipeError
from pipeline.integrations import tasks


@contextmanager
def client_for(scheduler: str = "", workers: int = 2) -> Iterator[Any]:
    """A client of the scheduler at `scheduler`, or of a local cluster of `workers` processes (one thread each:
    a stage is one process's work) that ends with the block."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise RecipeError(tasks.install_hint("dask", "Dask distributed")) from None
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _run(job: dict[str, Any], *upstream: dict[str, Any]) -> dict[str, Any]:
    """Dask hands the finished upstream results in (and never starts this when one of them failed)."""
    return tasks.run_stage(job)


def run_on_cluster(
    recipe: str | Path, workdir: str | Path, client: Any, formats: list[str] | None = None
) -> dict[str, Any]:
    """Run the recipe's stages on `client`'s cluster; the run's summary (status, failed stages, where each ran)."""
    from dask.distributed import wait

    recipe, workdir = str(Path(recipe).resolve()), str(Path(workdir).resolve())
    plan, jobs = tasks.plan_jobs(recipe, workdir, formats)
    run = uuid.uuid4().hex[:8]  # this call's tasks: Dask may still hold an earlier call's results under their keys
    futures: dict[str, Any] = {}
    for job in jobs:
        settings = tasks.task_settings(plan, job["kind"])
        futures[job["stage"]] = client.submit(
            _run,
            job,
            *[futures[d] for d, _ in job["deps"]],
            key=f"{tasks.safe_id(job['stage'])}-{job['key'][:16]}-{run}",
            retries=settings.retries or 0,
            pure=False,
        )
    wait(list(futures.values()))
    summary = tasks.finish(recipe, workdir, formats)
    summary["tasks"] = {k: f.result() for k, f in futures.items() if f.status == "finished"}
    return summary
