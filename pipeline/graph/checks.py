"""Feasibility checks of a recipe, run when its plan is built and before any heavy work: the source is
there and is what it says, every format's backend is installed and its options fit the model, the
calibration and evaluation data exist and suffice, serving options name real targets and options.

Each problem is a RecipeError naming its field; build_plan adds the recipe's file:line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import serving
from pipeline.backends import FORMATS
from pipeline.checkpoints import sources
from pipeline.errors import RecipeError
from pipeline.evaluation import lmeval
from pipeline.graph.fitting import fit_calibration_source, fit_group_sizes
from pipeline.recipe import FormatOptions, Recipe
from pipeline.serving import argnames
from pipeline.stages import calibration, eval_corpus


@dataclass(frozen=True)
class Found:
    recipe: Recipe  # with the unset options that must fit the model chosen (pipeline.graph.fitting)
    model_config: dict[str, Any] | None  # the source's config.json, when it could be read
    calibrated: list[FormatOptions]  # the formats that need the calibration set
    notes: list[str]  # checks that could not run (e.g. offline), one line each


def check(recipe: Recipe, base: Path, with_calibration: bool) -> Found:
    """Cheap checks first, before any hashing of big files."""
    sources.check(recipe.model)
    config, note = sources.model_config(recipe.model)
    recipe, notes = fit_group_sizes(recipe, config)
    needs = [o for o in recipe.formats if FORMATS[o.format].backend.needs_calibration(o)]
    if needs or with_calibration:
        recipe, more = fit_calibration_source(recipe, config)
        notes += more
    notes += [note] if note else []
    for i, opts in enumerate(recipe.formats):
        backend = FORMATS[opts.format].backend
        missing = backend.missing()
        if missing:
            raise RecipeError(
                f"format {opts.format!r} needs {', '.join(missing)}: {backend.install_hint()}",
                field=("formats", i, "format"),
            )
        for option, problem in backend.problems(opts, config):
            raise RecipeError(problem, field=("formats", i, option))
    _check_serving(recipe)
    if recipe.evaluation.enabled:
        check_evaluation(recipe, base, config)
    if needs or with_calibration:
        notes.append(calibration.check(recipe.calibration, base, config))
    return Found(recipe, config, needs, [n for n in notes if n])


def _check_serving(recipe: Recipe) -> None:
    spec, where = recipe.package.serving, ("package", "serving")
    for i, target in enumerate(spec.targets or []):
        if target not in serving.TARGETS:
            raise RecipeError(
                f"unknown serving target {target!r}; known: {', '.join(serving.TARGETS)}", field=(*where, "targets", i)
            )
    for field, engine in (("vllm_args", "vllm"), ("tgi_args", "tgi")):
        problems = argnames.unknown(engine, list(getattr(spec, field)))
        if problems:
            raise RecipeError(problems[0], field=(*where, field))


def check_evaluation(recipe: Recipe, base: Path, model_config: dict[str, Any] | None) -> None:
    ev = recipe.evaluation
    eval_corpus.check(ev, base, model_config)
    if ev.speed.enabled and ev.speed.prompt_tokens > ev.windows * ev.context:
        raise RecipeError(
            f"{ev.speed.prompt_tokens} is more than the evaluation text holds ({ev.windows} x {ev.context} tokens)",
            field=("evaluation", "speed", "prompt_tokens"),
        )
    limit = (model_config or {}).get("max_position_embeddings")
    if ev.speed.enabled and limit and ev.speed.prompt_tokens + ev.speed.decode_tokens > limit:
        raise RecipeError(
            f"prompt + decode tokens exceed the model's context ({limit})",
            field=("evaluation", "speed", "decode_tokens"),
        )
    for i, d in enumerate(ev.task_dirs):
        if not d.is_dir():
            raise RecipeError(f"no such directory: {d}", field=("evaluation", "task_dirs", i))
    if ev.tasks:
        lmeval.check(ev.tasks, lmeval.task_dirs(ev.task_dirs))
