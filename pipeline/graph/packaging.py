"""The packaging part of the stage graph: a package stage per artifact (card, serving/, manifest) and,
when publishing, a publish stage per artifact after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.backends import FORMATS
from pipeline.data.sources import named_sources
from pipeline.errors import RecipeError
from pipeline.graph.stage import Stage
from pipeline.recipe import Recipe
from pipeline.stage_id import CALIBRATION, REFERENCE, SOURCE, Kind, StageId
from pipeline.stages import package, publish
from pipeline.versions import versions


def model_name(recipe: Recipe) -> str:
    """{model} of publish.repo_template: the base model's name, known at plan time."""
    return (recipe.package.base_model or recipe.model.hub or recipe.name).split("/")[-1]


def repo_ids(recipe: Recipe) -> dict[str, str]:
    """Hub repo per artifact, whenever the recipe says enough to name one (publishing on or not, so a
    package's cache key does not change between `run` and `publish`)."""
    spec = recipe.publish
    if "{org}" in spec.repo_template + (spec.gguf_repo or "") and not spec.org:
        return {}
    model = model_name(recipe)
    return {o.artifact: publish.repo_id(spec, recipe.name, model, o.artifact, is_gguf(o)) for o in recipe.formats}


def is_gguf(opts: Any) -> bool:
    return FORMATS[opts.format].backend.kind == "gguf"


def gguf_repo(recipe: Recipe) -> str | None:
    """The one repo every GGUF artifact goes to (publish.gguf_repo), when the recipe has GGUF artifacts."""
    ggufs = [o for o in recipe.formats if is_gguf(o)]
    if not ggufs or recipe.publish.gguf_repo is None:
        return None
    return repo_ids(recipe).get(ggufs[0].artifact)


def repo_collision(recipe: Recipe) -> str | None:
    """The first repo that publish.repo_template gives to two artifacts (each upload would overwrite the
    last one's weights and card), or None. GGUF artifacts share publish.gguf_repo by design: a file each."""
    seen: dict[str, str] = {}
    shared, kinds = gguf_repo(recipe), {o.artifact: is_gguf(o) for o in recipe.formats}
    for art, repo in repo_ids(recipe).items():
        if repo == shared and kinds[art] and kinds[seen.get(repo, art)]:
            seen.setdefault(repo, art)
            continue
        if repo in seen:
            return (
                f"repo_template {recipe.publish.repo_template!r} names one repo, {repo}, for {seen[repo]!r} and {art!r}"
            )
        seen[repo] = art
    return None


def _excerpt(recipe: Recipe, opts: Any, calibrated: bool) -> str:
    doc: dict[str, Any] = {"model": recipe.model.model_dump(mode="json", exclude_none=True)}
    if calibrated:
        doc["calibration"] = recipe.calibration.model_dump(mode="json", exclude_none=True)
    doc["formats"] = [opts.model_dump(mode="json", exclude_none=True)]
    return yaml.safe_dump(_no_local_paths(doc), sort_keys=False)


def _no_local_paths(value: Any) -> Any:
    """The excerpt goes into published cards and manifests: a local path keeps only its file name
    (`/home/me/ckpt/imatrix.gguf` -> `imatrix.gguf`), the machine's directory layout stays here."""
    if isinstance(value, dict):
        return {k: _no_local_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_local_paths(v) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value) and Path(value).expanduser().is_absolute():
        return Path(value).name
    if isinstance(value, str) and value.startswith(("~", "../")):
        return Path(value).name
    return value


def jobs(recipe: Recipe, calibrated: list[Any], planned: list[Stage]) -> list[package.PackageJob]:
    """What each artifact's package will be, given the stages planned so far."""
    ids = {s.id for s in planned}
    return [_job(recipe, o, calibrated, repo_ids(recipe), ids) for o in recipe.formats]


def stages(recipe: Recipe, calibrated: list[Any], with_publish: bool, planned: list[Stage]) -> list[Stage]:
    """The package stages (and publish stages after them when publishing)."""
    out, repos, ids = [], repo_ids(recipe), {s.id for s in planned}
    if with_publish and not repos:
        raise RecipeError("publishing needs publish.org: repo_template uses {org}", field=("publish", "org"))
    clash = repo_collision(recipe) if with_publish else None
    if clash:
        raise RecipeError(f"{clash}; add {{format}} to it", field=("publish", "repo_template"))
    for opts in recipe.formats:
        art, job = opts.artifact, _job(recipe, opts, calibrated, repos, ids)
        ev, floor = job.evaluate_id, job.floor_id
        deps = (
            [SOURCE, job.quantize_id]
            + ([CALIBRATION] if opts in calibrated else [])
            + ([ev, REFERENCE] if ev else [])
            + ([floor] if floor else [])
            + ([job.serve_check_id] if job.serve_check_id else [])
        )
        packaged = StageId(Kind.PACKAGE, art)
        out.append(
            Stage(
                id=packaged,
                kind=Kind.PACKAGE,
                describe="model card, serving configs, manifest",
                config=package.config(job),
                deps=deps,
                versions=versions(("huggingface_hub", "pyyaml", "jinja2")),
                artifact=art,
                link=f"packages/{art}",
                inline=True,
            )
        )
        if with_publish and not (is_gguf(opts) and gguf_repo(recipe)):
            spec, repo = recipe.publish, repos[art]
            out.append(
                Stage(
                    id=StageId(Kind.PUBLISH, art),
                    kind=Kind.PUBLISH,
                    describe=f"push to the Hub: {repo}",
                    config=publish.config(spec, repo, packaged),
                    deps=[packaged],
                    versions=versions(("huggingface_hub",)),
                    artifact=art,
                    inline=True,
                )
            )
    shared = gguf_repo(recipe) if with_publish else None
    if shared:
        packages = [StageId(Kind.PACKAGE, o.artifact) for o in recipe.formats if is_gguf(o)]
        out.append(
            Stage(
                id=StageId(Kind.PUBLISH, "gguf"),
                kind=Kind.PUBLISH,
                describe=f"push every GGUF type to the Hub, a file each: {shared}",
                config=publish.gguf_config(recipe.publish, shared, model_name(recipe), packages),
                deps=packages,
                versions=versions(("huggingface_hub",)),
                inline=True,
            )
        )
    return out


def calibration_datasets(recipe: Recipe) -> list[str]:
    """The calibration set's Hub dataset for the card's `datasets:`: a named source's `hub_id`, an inline
    one's, or a hub source's path (none for local files or self-made text)."""
    src = recipe.calibration.source
    if isinstance(src, str):
        src = named_sources().get(src)
    hub = src and (src.hub_id or (src.path if src.kind == "hub" else None))
    return [hub] if hub else []


def _job(
    recipe: Recipe, opts: Any, calibrated: list[Any], repos: dict[str, str], planned: set[str]
) -> package.PackageJob:
    backend, art = FORMATS[opts.format].backend, opts.artifact
    ev = StageId(Kind.EVALUATE, art) if recipe.evaluation.enabled else None
    floor = StageId(Kind.FLOOR, backend.engine) if StageId(Kind.FLOOR, backend.engine) in planned else None
    check = StageId(Kind.SERVE_CHECK, art)
    seeds = {"calibration": recipe.calibration.seed} if opts in calibrated else {}
    seeds |= {"evaluation": recipe.evaluation.seed} if ev else {}
    return package.PackageJob(
        recipe_name=recipe.name,
        artifact=art,
        format=opts.format,
        kind=backend.kind,
        description=backend.describe(opts),
        tags=backend.tags(opts),
        spec=recipe.package,
        recipe_excerpt=_excerpt(recipe, opts, opts in calibrated),
        quantize_id=StageId(Kind.QUANTIZE, art),
        versions=backend.versions(),
        repo_id=repos.get(art),
        evaluate_id=ev,
        bnb_quantize=getattr(backend, "tgi_quantize", lambda o: None)(opts),
        seeds=seeds,
        datasets=calibration_datasets(recipe) if opts in calibrated else [],
        gguf_repo_model=model_name(recipe) if is_gguf(opts) and gguf_repo(recipe) else None,
        floor_id=floor,
        serve_check_id=check if check in planned else None,
    )
