"""Turn a recipe into the stage graph: each stage with its inputs, config and cache key.

Building the plan checks feasibility (source present, backend installed, options that fit the
model) and raises RecipeError before anything is written or any heavy work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.backends import FORMATS
from pipeline.cache import is_finished, stable_hash, stage_dir
from pipeline.errors import RecipeError
from pipeline.evaluation.plan import check_evaluation, evaluation_stages
from pipeline.evaluation.vllm_plan import vllm_stages
from pipeline.packaging import jobs, package_stages
from pipeline.recipe import Recipe
from pipeline.recipe_loader import line_of
from pipeline.stage import Stage
from pipeline.stages import calibration, quantize, source, source_checks
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
    with_calibration: bool = False  # how it was built: a stage worker rebuilds the same plan
    with_publish: bool = False

    def stage(self, stage_id: str) -> Stage:
        return next(s for s in self.stages if s.id == stage_id)

    def cached(self, stage: Stage) -> bool:
        return is_finished(stage.path, stage.key)

    def downstream(self, names: list[str]) -> set[str]:
        """Stage ids matching `names` (id, kind or artifact) and everything that depends on them."""
        chosen = {s.id for s in self.stages if any(s.matches(n) for n in names)}
        for s in self.stages:  # stages are in dependency order
            if any(d in chosen for d in s.deps):
                chosen.add(s.id)
        return chosen


def build_plan(recipe: Recipe, recipe_path: Path, workdir: Path, with_calibration: bool = False, with_publish: bool | None = None) -> Plan:
    """The stage graph. Calibration is a stage only when a format needs it (or `with_calibration`);
    publish stages when the recipe enables publishing (or `with_publish`)."""
    try:
        return _build(recipe, recipe_path, workdir, with_calibration, recipe.publish.enabled if with_publish is None else with_publish)
    except RecipeError as e:
        if e.file is None:
            e.file, e.line = str(recipe_path), line_of(recipe_path, e.loc)
            e.args = (str(e),)
        raise


def _check(recipe: Recipe, base: Path, with_calibration: bool) -> tuple[dict[str, Any] | None, list[Any], list[str]]:
    """Cheap feasibility checks, run before any hashing of big files: (model config, formats needing calibration, notes)."""
    source_checks.check(recipe.model)
    config, note = source_checks.model_config(recipe.model)
    for i, opts in enumerate(recipe.formats):
        backend = FORMATS[opts.format].backend
        missing = backend.missing()
        if missing:
            raise RecipeError(f"format {opts.format!r} needs {', '.join(missing)}: {backend.install_hint()}", field=("formats", i, "format"))
        for option, problem in backend.problems(opts, config):
            raise RecipeError(problem, field=("formats", i, option))
    if recipe.evaluation.enabled:
        check_evaluation(recipe, base, config)
    needs = [o for o in recipe.formats if FORMATS[o.format].backend.needs_calibration(o)]
    if needs or with_calibration:
        calibration.check(recipe.calibration, base, config)
    return config, needs, [note] if note else []


def _build(recipe: Recipe, recipe_path: Path, workdir: Path, with_calibration: bool, with_publish: bool) -> Plan:
    spec, base = recipe.calibration, recipe_path.parent
    config, needs, notes = _check(recipe, base, with_calibration)
    stages = [Stage(
        id="source", kind="source", label="source", describe=_describe_source(recipe),
        config={"version": source.VERSION, **source.fingerprint(recipe.model)}, deps=[],
        versions=versions(SOURCE_PACKAGES), run=lambda out, inputs, ctx: source.run(recipe.model, out, ctx), link="source",
    )]
    if needs or with_calibration:
        stages.append(Stage(
            id="calibration", kind="calibration", label="calibration", describe=_describe_calibration(recipe),
            config=calibration.fingerprint(spec, base), deps=["source"], versions=versions(CALIBRATION_PACKAGES),
            run=lambda out, inputs, ctx: calibration.run(spec, base, inputs["source"], out, ctx),
        ))
    for opts in recipe.formats:
        backend = FORMATS[opts.format].backend
        shared = backend.prerequisites(opts)  # e.g. one GGUF conversion for every GGUF type
        for pre in shared:
            if not any(s.id == pre.id for s in stages):
                stages.append(pre)
        deps = ["source"] + (["calibration"] if opts in needs else []) + [pre.id for pre in shared]
        stages.append(Stage(
            id=f"quantize[{opts.artifact}]", kind="quantize", label=f"quantize-{opts.artifact}",
            describe=backend.describe(opts), artifact=opts.artifact, link=f"artifacts/{opts.artifact}",
            config={"version": quantize.VERSION, "backend": backend.name, "options": opts.model_dump(mode="json", exclude={"name", "gates"}),
                    "content": backend.content(opts)},
            deps=deps, versions=backend.versions(), imports=backend.modules,
            run=lambda out, inputs, ctx, o=opts: quantize.run(o, inputs, out, ctx),
        ))
    if recipe.evaluation.enabled:
        stages += evaluation_stages(recipe, base, [s.id for s in stages])
        served, skipped = vllm_stages(recipe, jobs(recipe, needs, [s.id for s in stages]))
        stages += served
        notes += skipped
    if with_publish and not recipe.package.enabled:
        raise RecipeError("publishing needs the packages: set package.enabled: true", field=("package", "enabled"))
    if recipe.package.enabled:
        stages += package_stages(recipe, needs, with_publish, [s.id for s in stages])
    run_dir = workdir / recipe.name
    keys: dict[str, str] = {}
    for s in stages:
        s.key = stable_hash({"stage": s.kind, "config": s.config, "deps": [keys[d] for d in s.deps], "versions": s.versions})
        s.path = stage_dir(run_dir, s.label, s.key)
        keys[s.id] = s.key
    serving = [n for o in recipe.formats for n in FORMATS[o.format].backend.serving_notes(o)]
    return Plan(recipe, recipe_path, run_dir, stages, config, serving=serving, notes=notes, with_calibration=with_calibration, with_publish=with_publish)


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
    return f"{name}: {c.samples} samples x {c.seq_len} tokens, seed {c.seed}"
