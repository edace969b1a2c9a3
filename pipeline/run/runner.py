"""Run a plan: skip finished stages, build the rest atomically, keep format branches independent."""

from __future__ import annotations

import logging
import signal
import time

from rich.markup import escape

from pipeline import cost
from pipeline.console import Eta, RunnerMemory, progress_reporter, stage_progress
from pipeline.errors import Interrupted, RecipeError, interruptible, one_line
from pipeline.graph.plan import Plan, Stage
from pipeline.run import single, worker
from pipeline.run.cache import clean_stale_tmp, run_lock
from pipeline.run.manifest import Manifest, StageRecord, relative

log = logging.getLogger(__name__)


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
                    if record.status in ("done", "cached"):
                        # a gate-failing artifact keeps its name on disk, marked failed in the manifest
                        single.link(plan.job(stage))
                    _apply_gates(plan, stage, record, progress)
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
        record.info = single.read_info(plan.job(stage))
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
    job = plan.job(stage)
    log_path = single.log_path(job)
    record.log = relative(log_path, plan.run_dir)
    try:
        info, peak = single.build(job, workers, report, memory)
        record.status, record.info, record.peak_rss_mb, record.seconds = "done", info, peak, info["seconds"]
        cost.learn(plan.cost, stage.id, record.seconds, peak)
    except KeyboardInterrupt:
        record.status = "interrupted"
        raise
    except Exception as e:  # one format failing must not take the others down
        record.status, record.error, record.bad_input = "failed", one_line(e), isinstance(e, RecipeError)
        record.peak_rss_mb = getattr(e, "peak_rss_mb", None)
        single.keep_traceback(job, e)
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


def _apply_gates(plan: Plan, stage: Stage, record: StageRecord, progress) -> None:
    if record.status not in ("done", "cached"):
        return
    problems = single.gate_failures(plan.job(stage), record.info)
    if problems:
        record.status, record.error = "failed-gates", "; ".join(problems)
        progress.console.print(
            f"[red]✗ {escape(stage.id)}[/] failed its quality gates: {escape(record.error)}", soft_wrap=True
        )
