"""One module per stage kind (pipeline.registry.STAGES names it; format backends' steps live with
their family). Each exposes `run(config, inputs, out, ctx)`: the stage's JSON config, its inputs'
finished output directories by stage id, the empty temp dir to fill, and the stage context. A module
whose stage reads files outside the run (a local checkpoint, data files, task YAMLs) also exposes
`fingerprint(config)`: those files' digests, computed afresh, as the config entries that hold them.

`run_job` runs a stage from its JSON (pipeline.graph.stage.Stage.job) in any process that sees the
workdir: the mid-run guard re-hashes only that stage's own files, never the whole recipe."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import registry
from pipeline.errors import StageError
from pipeline.fingerprint import stage_key

StageRun = Callable[[dict[str, Any], dict[str, Path], Path, Any], dict[str, Any]]


def module_of(kind: str) -> tuple[Any, str]:
    """The module that runs `kind`, and the name of its run function."""
    where = registry.STAGES[kind]
    name, _, func = where.partition(":")
    return importlib.import_module(name), func or "run"


def check_job(job: dict[str, Any]) -> None:
    """The job is what was planned: its key is its config's, and the files its stage reads outside the
    run still have the digests it was planned with (a source or data file modified mid-run)."""
    deps = [key for _, key in job["deps"]]
    if stage_key(job["kind"], job["config"], deps, job["versions"]) != job["key"]:
        raise StageError(f"{job['stage']}: the job's key is not its config's (a job edited or from another version)")
    module, _ = module_of(job["kind"])
    fresh = getattr(module, "fingerprint", None)
    if fresh is None:
        return
    now = {**job["config"], **fresh(job["config"])}
    if stage_key(job["kind"], now, deps, job["versions"]) != job["key"]:
        raise StageError(
            f"{job['stage']}: its inputs changed since the run was planned (a source or data file was modified "
            "mid-run); rerun"
        )


def run_job(job: dict[str, Any], out: Path, ctx: Any) -> dict[str, Any]:
    module, func = module_of(job["kind"])
    run: StageRun = getattr(module, func)
    return run(job["config"], {k: Path(v) for k, v in job["inputs"].items()}, out, ctx)
