"""Python API: the same plan and run as the CLI, for notebooks and schedulers.

from pipeline import api
result = api.run("recipes/smollm2-demo.yaml", workdir="runs", only_formats=["fp8"])
result.artifacts["fp8"]   # Path of the finished artifact
result.packages["fp8"]    # its package: model card, serving/, manifest.json
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cost import price
from pipeline.errors import RecipeError
from pipeline.graph.plan import Plan, build_plan
from pipeline.recipe import Recipe
from pipeline.recipe_loader import load_recipe
from pipeline.report import report
from pipeline.run.runner import execute
from pipeline.stage_id import REFERENCE, StageId


@dataclass
class RunResult:
    status: str  # ok | failed
    run_dir: Path
    manifest: Path
    artifacts: dict[str, Path] = field(default_factory=dict)  # artifact name -> finished output dir
    failures: dict[str, str] = field(default_factory=dict)  # stage id -> one-line reason
    metrics: dict[str, dict] = field(default_factory=dict)  # "base" and artifact name -> evaluation metrics
    packages: dict[str, Path] = field(
        default_factory=dict
    )  # artifact name -> package dir (card, serving/, manifest.json)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def plan(recipe: str | Path, workdir: str | Path = "runs", only_formats: list[str] | None = None) -> Plan:
    """Validate the recipe, build its stage graph and estimate it on this machine (plan.cost); raises
    RecipeError on bad input, a run that cannot fit (disk, memory) or one over the recipe's `limits`."""
    path = Path(recipe)
    return price(build_plan(select_formats(load_recipe(path), only_formats), path, Path(workdir)))


def run(
    recipe: str | Path,
    workdir: str | Path = "runs",
    only_formats: list[str] | None = None,
    force: list[str] | None = None,
    quiet: bool = True,
) -> RunResult:
    """Run the recipe (or only some of its formats), reusing finished stages."""
    p = plan(recipe, workdir, only_formats)
    manifest = execute(p, force=force, quiet=quiet, manifest_name=manifest_name(only_formats))
    artifacts = {
        r.artifact: p.run_dir / r.path
        for r in manifest.records
        if r.kind == "quantize" and r.status in ("done", "cached")
    }
    packages = {
        r.artifact: p.run_dir / r.path
        for r in manifest.records
        if r.kind == "package" and r.status in ("done", "cached")
    }
    failures = {r.id: r.error or r.status for r in manifest.failed()}
    metrics = {
        _metrics_name(StageId.parse(r.id)): r.info
        for r in manifest.records
        if r.kind in ("reference", "evaluate", "evaluate-engine") and r.info
    }
    if not only_formats:
        report.write(p.run_dir)
    return RunResult(manifest.status, p.run_dir, manifest.path, artifacts, failures, metrics, packages)


def _metrics_name(sid: StageId) -> str:
    """ "base" for the reference, the artifact for its evaluation, "fp8@vllm" for fp8 measured in vLLM."""
    if sid == REFERENCE:
        return "base"
    return f"{sid.arg}@{sid.engine}" if sid.engine else str(sid.arg)


def manifest_name(only_formats: list[str] | None) -> str:
    """A partial run keeps its own manifest and leaves the run's (all formats, the report's source) alone."""
    return f"manifests/only-{'+'.join(sorted(only_formats))}.json" if only_formats else "manifest.json"


def select_formats(recipe: Recipe, names: list[str] | None) -> Recipe:
    """The recipe with only the formats whose artifacts are `names` (all when None)."""
    if not names:
        return recipe
    known = [f.artifact for f in recipe.formats]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise RecipeError(
            f"{unknown[0]!r} is not an artifact of this recipe; it has: {', '.join(known)}",
            field="formats",
        )
    return recipe.model_copy(update={"formats": [f for f in recipe.formats if f.artifact in names]})
