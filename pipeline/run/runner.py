"""Run a plan: skip finished stages, build the rest atomically, keep format branches independent."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.markup import escape

from pipeline import cost
from pipeline.console import Eta, RunnerMemory, StageContext, progress_reporter, stage_log, stage_progress
from pipeline.errors import Interrupted, RecipeError, StageError, interruptible, one_line
from pipeline.graph.plan import Plan, Stage
from pipeline.run import worker
from pipeline.run.cache import atomic_stage, clean_stale_tmp
from pipeline.run.manifest import Manifest, StageRecord, relative

log = logging.getLogger(__name__)


@contextmanager
def run_lock(run_dir: Path, shared: bool = False) -> Iterator[None]:
    """One run per run directory at a time: two runs would race on the same stage outputs.

    Orchestrators (Prefect, Airflow) run disjoint stages of one plan in parallel tasks: those take the
    lock shared, which still keeps a CLI run (exclusive) out while any of them works."""
    with open(run_dir / ".lock", "a") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecipeError(
                f"another run is using {run_dir} (lock held); wait for it or use another --workdir"
            ) from None
        yield


def execute(
    plan: Plan,
    force: list[str] | None = None,
    quiet: bool = False,
    verbose: bool = False,
    only: set[str] | None = None,
    manifest_name: str = "manifest.json",
    shared_lock: bool = False,
) -> Manifest:
    """Run the plan's stages in order (or just `only` those); return the run's manifest.

    `shared_lock`: for orchestrator tasks running disjoint stages of the plan side by side (stale
    temp dirs are then left for the next exclusive run to clear: another task may own them)."""
    unknown = [f for f in force or [] if not any(s.matches(f) for s in plan.stages)]
    if unknown:
        raise RecipeError(f"--force {unknown[0]!r} names no stage; stages: {', '.join(s.id for s in plan.stages)}")
    forced = plan.downstream(force or [])
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    with interruptible(), run_lock(plan.run_dir, shared_lock):
        if not shared_lock:
            clean_stale_tmp(plan.run_dir)
        manifest = Manifest(plan, manifest_name)
        memory = RunnerMemory()
        manifest.runner = memory.peak_mb
        broken: set[str] = set()
        with stage_progress(quiet) as progress, worker.Workers(plan.run_dir / "logs", verbose) as workers:
            try:
                for stage in plan.stages:
                    if only is not None and stage.id not in only:
                        continue
                    record = _run_stage(plan, stage, stage.id in forced, broken, progress, workers, memory)
                    if stage.link and record.status in ("done", "cached"):
                        _link(
                            plan, stage
                        )  # a gate-failing artifact keeps its name on disk, marked failed in the manifest
                    _apply_gates(stage, record, progress)
                    manifest.add(record)
                    if record.status in ("failed", "failed-gates", "skipped"):
                        broken.add(stage.id)
            except KeyboardInterrupt as e:
                manifest.interrupted_by = signal.Signals(e.signum).name if isinstance(e, Interrupted) else "SIGINT"
                manifest.finish("interrupted")
                raise
        manifest.finish("failed" if manifest.failed() else "ok")
    return manifest


def _run_stage(
    plan: Plan, stage: Stage, forced: bool, broken: set[str], progress, workers: worker.Workers, memory: RunnerMemory
) -> StageRecord:
    record = StageRecord(stage.id, stage.kind, stage.artifact, stage.key, relative(stage.path, plan.run_dir), "pending")
    bad_deps = [d for d in stage.deps if d in broken]
    if bad_deps:
        record.status, record.error = "skipped", f"needs {', '.join(bad_deps)}, which failed"
        progress.console.print(f"[yellow]↷ {escape(stage.id)}[/] skipped: {escape(record.error)}", soft_wrap=True)
        return record
    if not forced and plan.cached(stage):
        record.status = "cached"
        record.info = _read_info(stage.path)
        # The figures of the run that built it: a cached stage took no time now, but the manifest and
        # report describe the output.
        record.seconds, record.peak_rss_mb = (record.info or {}).get("seconds"), (record.info or {}).get("peak_rss_mb")
        progress.console.print(f"[green]✓ {escape(stage.id)}[/] cached [dim]{record.path}[/]")
        return record
    estimate = plan.cost.stages.get(stage.id) if plan.cost else None
    record.estimate = estimate.to_json() if estimate else None
    start = time.perf_counter()
    eta = Eta(estimate.seconds if estimate else None, start)
    task = progress.add_task(f"[bold]{escape(stage.id)}[/]  {stage.describe}{eta.line('')}", total=None)
    report = progress_reporter(progress, task, stage.id, eta.line)
    log_path = plan.run_dir / "logs" / f"{stage.label}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")  # this attempt's log; the runner and the worker both append to it
    record.log = relative(log_path, plan.run_dir)
    inputs = {d: plan.stage(d).path for d in stage.deps}
    try:
        with stage_log(log_path, workers.verbose):
            with atomic_stage(plan.run_dir, stage.label, stage.key, {"stage": stage.id}) as tmp:
                if stage.inline:
                    info, peak = _run_inline(plan, stage, tmp, inputs, report, memory)
                else:
                    result = workers.run(worker.job(plan, stage, tmp, inputs, log_path, workers.verbose), report)
                    if result.error is not None:
                        record.peak_rss_mb = result.peak_rss_mb
                        raise (RecipeError if result.bad_input else StageError)(result.error)
                    info, peak = result.info or {}, result.peak_rss_mb
                info.setdefault(
                    "seconds", round(time.perf_counter() - start, 2)
                )  # kept with the output: cards and reports cite it
                info["peak_rss_mb"] = peak
                (tmp / "stage_info.json").write_text(json.dumps(info, indent=2, default=str))
        record.status, record.info, record.peak_rss_mb, record.seconds = "done", info, peak, info["seconds"]
        cost.learn(plan.cost, stage.id, record.seconds, peak)
    except KeyboardInterrupt:
        record.status = "interrupted"
        raise
    except Exception as e:  # one format failing must not take the others down
        record.status, record.error, record.bad_input = "failed", one_line(e), isinstance(e, RecipeError)
        if not isinstance(e, (StageError, RecipeError)) or stage.inline:
            with open(log_path, "a") as f:
                f.write(traceback.format_exc())
    finally:
        if record.seconds is None:
            record.seconds = round(time.perf_counter() - start, 2)
        progress.remove_task(task)
    mark = "[green]✓" if record.status == "done" else "[red]✗"
    detail = (
        f"{record.seconds:.1f}s, peak {record.peak_rss_mb} MB"
        + (f" [dim](est. {estimate.seconds:.0f} s, {estimate.peak_rss_mb:.0f} MB)[/]" if estimate else "")
        if record.status == "done"
        else f"{escape(record.error or '')} (log: {log_path})"
    )
    progress.console.print(f"{mark} {escape(stage.id)}[/] {detail}", soft_wrap=True)
    return record


def _run_inline(
    plan: Plan, stage: Stage, tmp: Path, inputs: dict[str, Path], report, memory: RunnerMemory
) -> tuple[dict, float | None]:
    """Light stages (packaging, publishing) run in the runner's own process: no worker start-up to pay."""
    mem: dict[str, float] = {}
    with memory.stage(mem):
        info = stage.run(
            tmp, inputs, StageContext(stage.id, report, trust_remote_code=plan.recipe.model.trust_remote_code)
        )
    return info, mem.get("peak_rss_mb")


def _read_info(path: Path) -> dict | None:
    try:
        return json.loads((path / "stage_info.json").read_text())
    except (OSError, ValueError):
        return None


def _apply_gates(stage: Stage, record: StageRecord, progress) -> None:
    if stage.check is None or record.status not in ("done", "cached") or not record.info:
        return
    problems = stage.check(record.info)
    if problems:
        record.status, record.error = "failed-gates", "; ".join(problems)
        progress.console.print(
            f"[red]✗ {escape(stage.id)}[/] failed its quality gates: {escape(record.error)}", soft_wrap=True
        )


def _link(plan: Plan, stage: Stage) -> None:
    """Stable names for the newest outputs: <run>/source, <run>/artifacts/<name>, <run>/evaluation/<name>."""
    link = plan.run_dir / str(stage.link)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(stage.path, link.parent))
    os.replace(tmp, link)
