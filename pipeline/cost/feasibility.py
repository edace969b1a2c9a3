"""What `plan` refuses from the estimates, and the cheaper choices it suggests.

Refused (RecipeError, exit 2, one line): a run that would write more than the disk under the workdir
has free (hard links count as free: the estimates already count them so), a stage whose peak memory
exceeds this machine's RAM where the library has no offload path, and whatever `limits` forbids."""

from __future__ import annotations

import shutil
from dataclasses import replace

from pipeline.console import human_time
from pipeline.cost.model import GB, MB
from pipeline.cost.stage_costs import COSTS
from pipeline.errors import RecipeError
from pipeline.files import existing_ancestor

# Stages that can run in less memory than their estimate: llm-compressor offloads layers to disk,
# data-free schemes and llama.cpp's tools stream or map their files.
OFFLOADS = {"quantize", "gguf-convert", "imatrix", "gguf-sensitivity", "serve-check", "source"}
SLACK = 1.05  # the disk estimate's own uncertainty is in its bytes: refuse only a clear shortfall


def check(plan, cost) -> None:
    if not cost.stages:
        return
    limits = plan.recipe.limits
    if limits.max_hours is not None and cost.seconds > limits.max_hours * 3600:
        top = max(cost.stages.items(), key=lambda kv: kv[1].seconds)
        raise RecipeError(
            f"the run is estimated at {human_time(cost.seconds)} here, over max_hours {limits.max_hours:g} "
            f"({top[0]} alone ≈ {human_time(top[1].seconds)})",
            field=("limits", "max_hours"),
        )
    if limits.max_disk is not None:
        from pipeline.checkpoints.loading import parse_size

        if cost.written > parse_size(limits.max_disk):
            raise RecipeError(
                f"the run would write ≈ {cost.written / GB:.1f} GB, over max_disk {limits.max_disk}",
                field=("limits", "max_disk"),
            )
    where = existing_ancestor(plan.run_dir)
    free = shutil.disk_usage(where).free
    if cost.written > free * SLACK:
        top = max(cost.stages.items(), key=lambda kv: kv[1].disk_peak)
        raise RecipeError(
            f"the run would write ≈ {cost.written / GB:.2f} GB but {where} has {free / GB:.2f} GB free: "
            f"short by {(cost.written - free) / GB:.2f} GB "
            f"({top[0]} alone writes ≈ {top[1].disk_peak / GB:.2f} GB)",
            field="formats",
        )
    ram = (cost.speed.ram_gb if cost.speed else 0) * 2**30
    for sid, e in cost.stages.items():
        kind = plan.stage(sid).kind
        if ram and kind not in OFFLOADS and e.peak_rss_mb * MB > ram:
            raise RecipeError(
                f"{sid} needs ≈ {e.peak_rss_mb * MB / GB:.1f} GB of memory, this machine has {ram / GB:.1f} GB "
                "and the engine has no offload path: turn evaluation off or evaluate on a bigger machine",
                field=("evaluation", "enabled"),
            )


def alternatives(plan, cost) -> list[str]:
    """For a quantize stage that dominates the run (over half of it and over 10 minutes): what the
    cheaper calibrated schemes would cost here."""
    out, given, total = [], cost.given, cost.seconds
    for sid, e in cost.stages.items():
        stage = plan.stage(sid)
        opts = given.options(stage)
        fmt = getattr(opts, "format", "")
        if (
            stage.kind != "quantize"
            or e.seconds < 600
            or e.seconds < 0.5 * total
            or fmt not in ("awq", "gptq", "w8a8-int8")
        ):
            continue
        ratio = e.seconds / max(cost.priors[sid].seconds, 1e-9)  # this machine's history, if any
        choices = []
        if fmt == "awq" and getattr(opts, "n_grid", 20) > 5:
            choices.append(
                ("awq with n_grid: 5", replace(given, formats={stage.artifact: opts.model_copy(update={"n_grid": 5})}))
            )
        if fmt == "awq":
            from pipeline.backends.llmcompressor import GptqOptions

            gptq = GptqOptions(format="gptq", group_size=opts.group_size, name=opts.name)
            choices.append(("gptq (same group size)", replace(given, formats={stage.artifact: gptq})))
        fewer = replace(given, calibration_tokens=max(given.calibration_tokens // 4, 1))
        choices.append((f"{fmt} on a quarter of the calibration tokens", fewer))
        said = [f"{name} ≈ {human_time(COSTS['quantize'](stage, c).seconds * ratio)}" for name, c in choices]
        out.append(
            f"{sid} dominates: ≈ {human_time(e.seconds)} of {human_time(total)} on this CPU; "
            + "; ".join(said)
            + "; on a GPU the calibration is a matter of minutes (pipeline/docs/benchmarks.md: the quality of each)"
        )
    return out
