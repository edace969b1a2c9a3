"""The vLLM part of the stage graph, when the recipe wants it (evaluation.vllm) and vLLM's environment
is set up: a serve check per artifact vLLM's core loads, and one of the base model (the control: it
shows the environment itself works); then, for each that started, the same quality and speed
measurement as in its own engine, through vLLM (evaluate[ARTIFACT@vllm], and floor[vllm] for the base)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.recipe import Recipe
from pipeline.stage import Stage
from pipeline.stages import evaluate, package, serve_check
from pipeline.versions import versions

ENGINE = "vllm"


def vllm_stages(recipe: Recipe, jobs: list[package.PackageJob]) -> tuple[list[Stage], list[str]]:
    """`jobs`: every artifact's package job (pipeline.packaging.jobs). Returns the stages and the notes
    for what was skipped."""
    from pipeline import toolenv
    from pipeline.evaluation.plan import EVAL_PACKAGES
    from pipeline.serving import vllm

    ev = recipe.evaluation
    servable = [j for j in jobs if j.kind in vllm.KINDS]
    if not (ev.enabled and ev.vllm and servable):
        return [], []
    env = toolenv.get("vllm")
    if not env.ready():
        return [], [f"vLLM serve checks and evaluation skipped: vLLM's environment is not set up on this machine ({env.setup_hint()}; "
                    "evaluation.vllm: false turns them off)"]
    base = package.PackageJob(recipe_name=recipe.name, artifact="base", format="base", kind="compressed-tensors",
                              description="the unquantized base model", tags=[], spec=recipe.package, recipe_excerpt="",
                              quantize_id="source", versions={})
    checks, evals, notes = [], [], []
    if ev.kld != "exact":
        notes.append("vLLM evaluation skipped: it needs the base's full log-probs (evaluation.kld: exact); serve checks still run")
    for job in [base, *servable]:
        check, model = f"serve-check[{job.artifact}]", job.quantize_id
        deps = ["source"] if job is base else ["source", model]
        checks.append(Stage(
            id=check, kind="serve-check", label=f"serve-check-{job.artifact}",
            describe=f"start it in vLLM ({serve_check.config_name()}) and ask it",
            config={"version": serve_check.VERSION, "job": job.config(), "env": env.key, "config": serve_check.config_name()},
            deps=deps, versions={"vllm": " ".join(env.requirements)}, artifact=None if job is base else job.artifact,
            run=lambda out, inputs, ctx, j=job: serve_check.run(j, inputs, out, ctx)))
        if ev.kld != "exact":
            continue
        sid, label = ("floor[vllm]", "floor-vllm") if job is base else (f"evaluate[{job.artifact}@vllm]", f"evaluate-{job.artifact}-vllm")
        evals.append(Stage(
            id=sid, kind="floor" if job is base else "evaluate-engine", label=label,
            describe="quality vs base, speed, through vLLM" + (" (the unquantized model: vLLM's floor)" if job is base else ""),
            config={"version": evaluate.VERSION, "engine": ENGINE, "env": env.key, "speed": ev.speed.model_dump(mode="json")},
            deps=[model, check, "eval-corpus", "reference"], versions=versions(EVAL_PACKAGES), artifact=None if job is base else job.artifact,
            link=f"evaluation/{label.removeprefix('evaluate-')}",
            run=lambda out, inputs, ctx, m=model, c=check: run(ev, inputs[m], inputs[c], inputs["eval-corpus"], inputs["reference"], out, ctx)))
    return checks + evals, notes


def run(ev: Any, model: Path, check: Path, corpus: Path, reference: Path, out: Path, ctx: Any) -> dict[str, Any]:
    """evaluate.run in vLLM, when the serve check started the model; else the refusal, as a result."""
    from pipeline import vllm_tool

    started = json.loads((check / package.SERVE_CHECK).read_text())
    if started["status"] != "ok":
        result = {"engine": ENGINE, "refused": started.get("reason") or started["status"]}
    else:
        try:
            return evaluate.run(ev, ENGINE, model, corpus, reference, out, ctx)
        except vllm_tool.ServerFailed as e:  # started from the package's config, but not with the evaluation's options
            result = {"engine": ENGINE, "refused": str(e)}
    ctx.status(f"not measured in vLLM: {result['refused']}")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result
