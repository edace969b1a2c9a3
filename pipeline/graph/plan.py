"""Turn a recipe into the stage graph: each stage with its inputs, config and cache key.

Building the plan checks feasibility first (pipeline.graph.checks: source present, backend installed,
options that fit the model) and raises RecipeError before anything is written or any heavy work
starts. The stages come in dependency order: source, calibration, each format's shared steps (once
per run) and quantize stage, then evaluation (graph.evaluation, graph.served) and packaging
(graph.packaging)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.backends import FORMATS, SharedStep
from pipeline.errors import RecipeError, line_of
from pipeline.files import is_finished, stage_dir
from pipeline.fingerprint import stage_key
from pipeline.graph import checks, evaluation, packaging, served
from pipeline.graph.machine import Machine
from pipeline.graph.stage import Stage
from pipeline.recipe import Recipe
from pipeline.stage_id import CALIBRATION, SOURCE, Kind, StageId
from pipeline.stages import calibration, quantize, source
from pipeline.versions import versions

SOURCE_PACKAGES = ("transformers", "torch", "gguf", "huggingface_hub", "safetensors")
CALIBRATION_PACKAGES = ("transformers", "tokenizers", "datasets", "torch")


@dataclass
class Plan:
    recipe: Recipe
    recipe_path: Path
    run_dir: Path
    stages: list[Stage]
    model_config: dict[str, Any] | None
    serving: list[str] = field(default_factory=list)  # where each artifact can be served
    notes: list[str] = field(default_factory=list)  # checks that could not run (e.g. offline), one line each
    labels: dict[str, str] = field(default_factory=dict)  # artifact -> its format as the results table names it
    with_calibration: bool = False  # how it was built
    with_publish: bool = False
    machine: Machine = field(default_factory=Machine)  # what was read from the machine
    cost: Any = None  # pipeline.cost.PlanCost, from cost.price(): the runner's and `plan`'s, never a worker's

    def stage(self, stage_id: str) -> Stage:
        return next(s for s in self.stages if s.id == stage_id)

    def job(self, stage: Stage) -> dict[str, Any]:
        """The stage as JSON (Stage.job) with its inputs' output paths: runnable without this plan."""
        keys = {s.id: s.key for s in self.stages}
        inputs = {d: self.stage(d).path for d in stage.deps}
        return stage.job(keys, inputs, self.recipe.model.trust_remote_code)

    def cached(self, stage: Stage) -> bool:
        return is_finished(stage.path, stage.key)

    def downstream(self, names: list[str]) -> set[str]:
        """Stage ids matching `names` (id, kind or artifact) and everything that depends on them."""
        chosen = {s.id for s in self.stages if any(s.matches(n) for n in names)}
        for s in self.stages:  # stages are in dependency order
            if any(d in chosen for d in s.deps):
                chosen.add(s.id)
        return chosen


def build_plan(
    recipe: Recipe,
    recipe_path: Path,
    workdir: Path,
    with_calibration: bool = False,
    with_publish: bool | None = None,
    machine: Machine | None = None,
) -> Plan:
    """The stage graph. Calibration is a stage only when a format needs it (or `with_calibration`);
    publish stages when the recipe enables publishing (or `with_publish`). `machine`: what to plan for
    (pipeline.graph.machine); read afresh when not given."""
    try:
        return _build(
            recipe,
            recipe_path,
            workdir,
            with_calibration,
            recipe.publish.enabled if with_publish is None else with_publish,
            machine or Machine.probe(),
        )
    except RecipeError as e:
        raise located(e, recipe_path) from None


def located(e: RecipeError, recipe_path: Path) -> RecipeError:
    """The error with the recipe's file and the line of its field (one line for the user, exit 2)."""
    if e.file is None:
        e.file, e.line = str(recipe_path), line_of(recipe_path, e.loc)
        e.args = (str(e),)
    return e


def _build(
    recipe: Recipe, recipe_path: Path, workdir: Path, with_calibration: bool, with_publish: bool, machine: Machine
) -> Plan:
    base = recipe_path.parent
    found = checks.check(recipe, base, with_calibration)
    recipe = found.recipe
    stages = [
        Stage(
            id=SOURCE,
            kind=Kind.SOURCE,
            describe=_describe_source(recipe),
            config=source.config(recipe.model),
            deps=[],
            versions=versions(SOURCE_PACKAGES),
            link="source",
        )
    ]
    if found.calibrated or with_calibration:
        spec = recipe.calibration
        stages.append(
            Stage(
                id=CALIBRATION,
                kind=Kind.CALIBRATION,
                describe=_describe_calibration(recipe),
                config=calibration.config(spec, base),
                deps=[SOURCE],
                versions=versions(CALIBRATION_PACKAGES),
            )
        )
    for opts in recipe.formats:
        backend = FORMATS[opts.format].backend
        steps = backend.shared_steps(opts)  # e.g. one GGUF conversion for every GGUF type
        for step in steps:
            same = next((s for s in stages if s.id == step.id), None)
            if same is None:
                stages.append(_step_stage(step))
            elif same.config != step.config or same.deps != [StageId.parse(n) for n in step.needs]:
                # one id must mean one output: a second step under it would silently use the first's
                raise RuntimeError(f"two different shared steps are both named {step.id}")
        deps = [SOURCE] + ([CALIBRATION] if opts in found.calibrated else []) + [step.id for step in steps]
        stages.append(
            Stage(
                id=StageId(Kind.QUANTIZE, opts.artifact),
                kind=Kind.QUANTIZE,
                describe=backend.describe(opts),
                artifact=opts.artifact,
                link=f"artifacts/{opts.artifact}",
                config=quantize.config(opts),
                deps=deps,
                versions=backend.versions(),
                imports=backend.modules,
            )
        )
    notes = list(found.notes)
    if recipe.evaluation.enabled:
        stages += evaluation.stages(recipe, base, stages, machine)
        more, skipped = served.stages(recipe, packaging.jobs(recipe, found.calibrated, stages), machine)
        stages += more
        notes += skipped
    if with_publish and not recipe.package.enabled:
        raise RecipeError("publishing needs the packages: set package.enabled: true", field=("package", "enabled"))
    if recipe.package.enabled:
        stages += packaging.stages(recipe, found.calibrated, with_publish, stages)
    run_dir = workdir / recipe.name
    keys: dict[str, str] = {}
    for s in stages:
        s.key = stage_key(s.kind, s.config, [keys[d] for d in s.deps], s.versions)
        s.path = stage_dir(run_dir, s.label, s.key)
        keys[s.id] = s.key
    serving = [n for o in recipe.formats for n in FORMATS[o.format].backend.serving_notes(o)]
    serving += served.refusals(recipe, machine)
    labels = {o.artifact: FORMATS[o.format].backend.label(o) for o in recipe.formats}
    return Plan(
        recipe,
        recipe_path,
        run_dir,
        stages,
        found.model_config,
        serving=serving,
        notes=notes,
        labels=labels,
        with_calibration=with_calibration,
        with_publish=with_publish,
        machine=machine,
    )


def _step_stage(step: SharedStep) -> Stage:
    """A backend's declared shared step as a stage of this run."""
    return Stage(
        id=step.id,
        kind=step.kind,
        label=step.label or "",
        describe=step.describe,
        config=step.config,
        deps=[StageId.parse(n) for n in step.needs],
        versions=step.versions,
    )


def _describe_source(recipe: Recipe) -> str:
    m = recipe.model
    if m.kind == "hub":
        return f"Hub {m.hub}@{m.revision[:12]}"
    if m.kind == "path":
        return f"local {m.path}"
    g = m.gguf
    return f"GGUF {g.package}/{g.file}" if hasattr(g, "package") else f"GGUF {g}"


def _describe_calibration(recipe: Recipe) -> str:
    c = recipe.calibration
    name = c.source if isinstance(c.source, str) else f"inline {c.source.kind}"
    return f"{name}: {c.samples or f'up to {c.wanted}'} samples x {c.seq_len} tokens, seed {c.seed}"
