"""The evaluation part of the stage graph: one corpus, one reference (the base model), the floor of
each other engine the artifacts run in, and one evaluate stage per artifact with its quality gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import engines
from pipeline.backends import FORMATS
from pipeline.evaluation import gates, lmeval
from pipeline.fingerprint import ARGS
from pipeline.graph.machine import Machine
from pipeline.graph.stage import Stage
from pipeline.recipe import EvaluationSpec, GatesSpec, Recipe
from pipeline.stage_id import EVAL_CORPUS, REFERENCE, SOURCE, Kind, StageId
from pipeline.stages import eval_corpus, evaluate, reference
from pipeline.versions import versions

EVAL_PACKAGES = ("transformers", "torch", "tokenizers", "datasets", "numpy", "lm_eval")


def gates_for(recipe: Recipe, opts: Any) -> GatesSpec:
    ev = recipe.evaluation
    family = gates.defaults(opts.format, opts.model_dump(mode="json")) if ev.default_gates else None
    return gates.resolve(opts.gates, ev.gates, family)


def measured(ev: EvaluationSpec) -> dict[str, Any]:
    """What an evaluate stage measures besides quality: part of its cache key."""
    return {
        "speed": ev.speed.model_dump(mode="json"),
        "tasks": ev.tasks,
        "task_limit": ev.task_limit,
        "task_files": lmeval.fingerprint(ev.tasks, lmeval.task_dirs(ev.task_dirs)),
    }


def stages(recipe: Recipe, base: Path, planned: list[Stage], machine: Machine) -> list[Stage]:
    """`planned`: the stages so far (an engine's floor is the output of one of them)."""
    ev = recipe.evaluation
    tasks = ("lm_eval",) if ev.tasks else ()
    spec = {**measured(ev), "compute": machine.compute}
    args = {"evaluation": ev.model_dump(mode="json")}
    out = [
        Stage(
            id=EVAL_CORPUS,
            kind=Kind.EVAL_CORPUS,
            describe=f"held-out text: {ev.windows} x {ev.context} tokens",
            config=eval_corpus.config(ev, base),
            deps=[SOURCE],
            versions=versions(("transformers", "tokenizers", "datasets")),
        ),
        Stage(
            id=REFERENCE,
            kind=Kind.REFERENCE,
            describe="base model: log-probs, perplexity, speed" + (", tasks" if ev.tasks else ""),
            config={
                "version": reference.VERSION,
                "kld": ev.kld,
                "top_k": ev.top_k,
                "score": ev.score,
                **spec,
                ARGS: args,
            },
            deps=[SOURCE, EVAL_CORPUS],
            versions=versions(EVAL_PACKAGES),
            link="evaluation/base",
            imports=tasks,
        ),
    ]
    used = list(dict.fromkeys(FORMATS[o.format].backend.engine for o in recipe.formats))
    for name in used if ev.floor else []:
        engine = engines.get(name)
        src = next((s.id for s in planned if engine.floor is not None and s.kind == engine.floor), None)
        if src is None:  # the engine runs the base model itself: the reference is its floor
            continue
        out.append(
            Stage(
                id=StageId(Kind.FLOOR, name),
                kind=Kind.FLOOR,
                describe=f"unquantized model in {engine.title}: the engine's own floor",
                config={
                    "version": evaluate.VERSION,
                    "engine": name,
                    **spec,
                    ARGS: {**args, "model": src, "floor": True},
                },
                deps=[src, EVAL_CORPUS, REFERENCE],
                versions=versions(EVAL_PACKAGES),
                link=f"evaluation/floor-{name}",
                imports=tasks,
            )
        )
    for opts in recipe.formats:
        backend, art, q = FORMATS[opts.format].backend, opts.artifact, StageId(Kind.QUANTIZE, opts.artifact)
        limits = gates_for(recipe, opts)
        out.append(
            Stage(
                id=StageId(Kind.EVALUATE, art),
                kind=Kind.EVALUATE,
                describe=f"quality vs base, speed ({backend.engine})",
                config={"version": evaluate.VERSION, "engine": backend.engine, **spec, ARGS: {**args, "model": q}},
                deps=[q, EVAL_CORPUS, REFERENCE],
                versions={**versions(EVAL_PACKAGES), **backend.versions()},
                link=f"evaluation/{art}",
                imports=tasks + backend.modules,
                gates=limits.model_dump(mode="json"),
            )
        )
    return out
