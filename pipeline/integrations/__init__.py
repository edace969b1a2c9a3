"""Orchestrator integrations at the edge (Prefect, Airflow, Dask): they import the core, the core never
imports them.

Each builds the plan once and makes every stage one task that runs that stage's job
(`tasks.run_stage`, pipeline.run.single): wherever the task lands, it needs the job and the shared
workdir, not the recipe. Retries and reruns reuse the content-addressed stage cache, and a task's
result is the stage's key, output path and where it ran."""
