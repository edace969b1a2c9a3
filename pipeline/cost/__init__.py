"""Know before you run: each stage's estimated seconds, peak RSS and bytes written on this machine.

`estimate(plan)` prices every stage of a plan (cached stages cost nothing) from the model's config,
the recipe's token counts and this machine's measured speeds (pipeline.cost.machine_speed, a few
seconds once per machine), then scales each figure by what this machine's finished stages of the same
kind measured against their own estimates (pipeline.cost.history). `plan` prints the figures and
refuses what cannot fit (pipeline.cost.feasibility); the runner shows them with an ETA and records
estimate beside measurement in the manifest."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cost import feasibility, history
from pipeline.cost.machine_speed import MachineSpeed, machine_speed
from pipeline.cost.model import CostInputs, Estimate
from pipeline.cost.shapes import ModelShape
from pipeline.cost.stage_costs import COSTS
from pipeline.errors import RecipeError
from pipeline.files import existing_ancestor
from pipeline.graph.plan import located


@dataclass
class PlanCost:
    stages: dict[str, Estimate] = field(default_factory=dict)  # stages still to run
    priors: dict[str, Estimate] = field(default_factory=dict)  # the same before history's correction
    groups: dict[str, str] = field(default_factory=dict)  # stage id -> its history group
    given: CostInputs | None = None  # what the figures were computed from
    speed: MachineSpeed | None = None
    note: str = ""  # why there are no figures, when there are none

    @property
    def seconds(self) -> float:
        return sum(e.seconds for e in self.stages.values())

    @property
    def written(self) -> int:
        """Disk the run fills at its peak: every stage's output, and the largest scratch of one stage."""
        scratch = max((e.scratch_bytes for e in self.stages.values()), default=0)
        return sum(e.written_bytes for e in self.stages.values()) + scratch


def price(plan):
    """Estimate every stage of `plan` still to run on this machine (measures the machine once) into
    plan.cost, and refuse, as bad input, a run the estimates say cannot fit: the disk, RAM, `limits`."""
    plan.cost = estimate(plan)
    try:
        feasibility.check(plan, plan.cost)
    except RecipeError as e:
        raise located(e, plan.recipe_path) from None
    return plan


def inputs(plan, speed: MachineSpeed) -> CostInputs | None:
    """What the cost functions need, from the plan; None when the model's shapes are unknown
    (a Hub source offline and not cached)."""
    from pipeline.checkpoints import loading

    config = plan.model_config
    if not config or "hidden_size" not in (config.get("text_config") or config):
        return None
    shape = ModelShape.from_config(config)
    recipe = plan.recipe
    src = recipe.model
    kind = src.kind
    sp = recipe.evaluation.speed
    return CostInputs(
        shape=shape,
        speed=speed,
        compute_dtype=loading.compute_dtype_name(shape.params, src.dtype),
        calibration_tokens=recipe.calibration.wanted * recipe.calibration.seq_len,
        eval_tokens=recipe.evaluation.windows * recipe.evaluation.context,
        formats={o.artifact: o for o in recipe.formats},
        source_written=_source_written(plan, shape),
        source_kind=kind,
        speed_run=(sp.prompt_tokens, sp.decode_tokens, sp.repeats + sp.warmup, sp.budget_s)
        if sp.enabled
        else (0, 0, 0, 0),
        tasks=bool(recipe.evaluation.tasks),
        eval_context=recipe.evaluation.context,
        calibration_seq_len=recipe.calibration.seq_len,
    )


def estimate(plan, measure: bool = True, every_stage: bool = False, learned: bool = True) -> PlanCost:
    """`every_stage`: cached stages too (to compare with a finished run); `learned`: apply history."""
    speed = machine_speed(measure=measure)
    if speed is None:
        return PlanCost(note="this machine's speeds are not measured yet (`pipeline plan` measures them)")
    try:
        given = inputs(plan, speed)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:  # a config without the usual shape keys
        return PlanCost(speed=speed, note=f"no estimates: the model's config lacks a shape ({type(e).__name__}: {e})")
    if given is None:
        return PlanCost(speed=speed, note="no estimates: the model's config.json is not available offline")
    past = history.corrections(speed.fingerprint)
    out = PlanCost(speed=speed, given=given)
    for stage in plan.stages:
        if (plan.cached(stage) and not every_stage) or stage.kind not in COSTS:
            continue
        prior = COSTS[stage.kind](stage, given)
        out.priors[stage.id], out.groups[stage.id] = prior, history.group(stage, given)
        out.stages[stage.id] = (
            history.corrected(prior, out.groups[stage.id], past, given.shape.params) if learned else prior
        )
    return out


def learn(cost: PlanCost | None, stage_id: str, seconds: float | None, peak_mb: float | None) -> None:
    """Record a finished stage's measurement beside its prior estimate (pipeline.cost.history)."""
    if cost is None or cost.given is None or stage_id not in cost.priors or not seconds:
        return
    try:
        params, prior = cost.given.shape.params, cost.priors[stage_id]
        history.record(cost.speed.fingerprint, cost.groups[stage_id], params, prior, seconds, peak_mb)
    except OSError:  # a read-only cache: estimates just do not learn
        pass


def _source_written(plan, shape: ModelShape) -> int:
    """A local checkpoint on the run's filesystem is hard-linked (free); elsewhere its weights are copied.
    A GGUF source is dequantized into the recipe's dtype. A Hub source downloads into the HF cache (free
    when every shard is there) and is hard-linked from it (copied when the cache is on another disk);
    both bytes are counted against the run's disk, an over-count when the cache's disk is another one."""
    src = plan.recipe.model
    if src.kind == "gguf":
        return shape.bytes(16)
    if src.kind == "hub":  # downloaded into the HF cache (unless there), then linked into the run
        from huggingface_hub import constants

        download = 0 if _hub_cached(src) else shape.bytes(16)
        return download + (0 if _same_filesystem(Path(constants.HF_HUB_CACHE), plan.run_dir) else shape.bytes(16))
    return 0 if _same_filesystem(Path(src.path), plan.run_dir) else shape.bytes(16)


def _same_filesystem(a: Path, b: Path) -> bool:
    """Hard links work between them (else the source's weights are copied)."""
    try:
        return os.stat(existing_ancestor(a)).st_dev == os.stat(existing_ancestor(b)).st_dev
    except OSError:
        return False


def _hub_cached(src) -> bool:
    """Every weight shard of the pinned commit is in the HF cache already (else the download counts)."""
    import json

    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(src.hub, "config.json", revision=src.revision)
    if not isinstance(config, str):
        return False
    snapshot = Path(config).parent
    index = snapshot / "model.safetensors.index.json"
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values()) if index.is_file() else {"model.safetensors"}
    except (OSError, ValueError, KeyError):
        return False
    return all((snapshot / s).is_file() for s in shards)
