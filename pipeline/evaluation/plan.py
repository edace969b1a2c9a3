"""The evaluation part of the stage graph: one corpus, one reference (the base model), one evaluate
stage per artifact with its quality gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import gates
from pipeline.backends import FORMATS
from pipeline.errors import RecipeError
from pipeline.recipe import Recipe
from pipeline.stage import Stage
from pipeline.stages import eval_corpus, evaluate, reference
from pipeline.versions import versions

EVAL_PACKAGES = ("transformers", "torch", "tokenizers", "datasets", "numpy", "lm_eval")


def check_evaluation(recipe: Recipe, base: Path, model_config: dict[str, Any] | None) -> None:
    ev = recipe.evaluation
    eval_corpus.check(ev, base, model_config)
    if ev.speed.enabled and ev.speed.prompt_tokens > ev.windows * ev.context:
        raise RecipeError(f"{ev.speed.prompt_tokens} is more than the evaluation text holds ({ev.windows} x {ev.context} tokens)",
                          field=("evaluation", "speed", "prompt_tokens"))
    limit = (model_config or {}).get("max_position_embeddings")
    if ev.speed.enabled and limit and ev.speed.prompt_tokens + ev.speed.decode_tokens > limit:
        raise RecipeError(f"prompt + decode tokens exceed the model's context ({limit})", field=("evaluation", "speed", "decode_tokens"))
    for i, d in enumerate(ev.task_dirs):
        if not d.is_dir():
            raise RecipeError(f"no such directory: {d}", field=("evaluation", "task_dirs", i))
    if ev.tasks:
        from pipeline.evaluation import lmeval

        lmeval.check(ev.tasks, lmeval.task_dirs(ev.task_dirs))


def gates_for(recipe: Recipe, opts: Any) -> gates.GatesSpec:
    ev = recipe.evaluation
    family = gates.defaults(opts.format, opts.model_dump(mode="json")) if ev.default_gates else None
    return gates.resolve(opts.gates, ev.gates, family)


def measured(ev: Any) -> dict[str, Any]:
    """What an evaluate stage measures besides quality: part of its cache key."""
    from pipeline.evaluation import lmeval

    return {"speed": ev.speed.model_dump(mode="json"), "tasks": ev.tasks, "task_limit": ev.task_limit,
            "task_files": lmeval.fingerprint(ev.tasks, lmeval.task_dirs(ev.task_dirs))}


def evaluation_stages(recipe: Recipe, base: Path, stage_ids: list[str]) -> list[Stage]:
    """`stage_ids`: the stages planned so far (an engine's floor is the output of one of them)."""
    from pipeline import engines

    ev = recipe.evaluation
    tasks = ("lm_eval",) if ev.tasks else ()
    spec = measured(ev)
    stages = [
        Stage(id="eval-corpus", kind="eval-corpus", label="eval-corpus", describe=f"held-out text: {ev.windows} x {ev.context} tokens",
              config=eval_corpus.fingerprint(ev, base), deps=["source"], versions=versions(("transformers", "tokenizers", "datasets")),
              run=lambda out, inputs, ctx: eval_corpus.run(ev, base, inputs["source"], out, ctx)),
        Stage(id="reference", kind="reference", label="reference", describe="base model: log-probs, perplexity, speed" + (", tasks" if ev.tasks else ""),
              config={"version": reference.VERSION, "kld": ev.kld, "top_k": ev.top_k, "score": ev.score, **spec},
              deps=["source", "eval-corpus"], versions=versions(EVAL_PACKAGES), link="evaluation/base", imports=tasks,
              run=lambda out, inputs, ctx: reference.run(ev, inputs["source"], inputs["eval-corpus"], out, ctx)),
    ]
    used = list(dict.fromkeys(FORMATS[o.format].backend.engine for o in recipe.formats))
    for name in used if ev.floor else []:
        Engine = engines.get(name)
        src = Engine.floor_input(stage_ids)
        if src is None:
            continue
        stages.append(Stage(
            id=f"floor[{name}]", kind="floor", label=f"floor-{name}", describe=f"unquantized model in {Engine.title}: the engine's own floor",
            config={"version": evaluate.VERSION, "engine": name, **spec}, deps=[src, "eval-corpus", "reference"],
            versions=versions(EVAL_PACKAGES), link=f"evaluation/floor-{name}", imports=tasks,
            run=lambda out, inputs, ctx, E=Engine, n=name, s=src: evaluate.run(ev, n, E.floor_model(inputs[s]), inputs["eval-corpus"],
                                                                                inputs["reference"], out, ctx)))
    for opts in recipe.formats:
        backend, art, q = FORMATS[opts.format].backend, opts.artifact, f"quantize[{opts.artifact}]"
        limits = gates_for(recipe, opts)
        stages.append(Stage(
            id=f"evaluate[{art}]", kind="evaluate", label=f"evaluate-{art}", describe=f"quality vs base, speed ({backend.engine})",
            config={"version": evaluate.VERSION, "engine": backend.engine, **spec}, deps=[q, "eval-corpus", "reference"],
            versions={**versions(EVAL_PACKAGES), **backend.versions()}, link=f"evaluation/{art}", imports=tasks + backend.modules,
            check=lambda info, g=limits: gates.failures(info, g),
            run=lambda out, inputs, ctx, e=backend.engine, q=q: evaluate.run(ev, e, inputs[q], inputs["eval-corpus"], inputs["reference"], out, ctx),
        ))
    return stages
