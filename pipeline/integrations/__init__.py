"""Orchestrator integrations at the edge: they import the core, the core never imports them.

Each stage of a plan becomes one orchestrator task that runs just that stage through the runner
(`tasks.run_stage`), so retries and reruns reuse the content-addressed stage cache, and a task's
result is the stage's cache key and output path."""
