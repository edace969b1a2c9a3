"""The vLLM part of the stage graph, when the recipe wants it (evaluation.vllm) and vLLM's environment
is set up: a serve check per artifact vLLM's core loads, and one of the base model (the control: it
shows the environment itself works); then, for each that started, the same quality and speed
measurement as in its own engine, through vLLM (evaluate[ARTIFACT@vllm], and floor[vllm] for the base)."""

from __future__ import annotations

from pipeline.backends import FORMATS
from pipeline.engines import ENGINES
from pipeline.fingerprint import ARGS
from pipeline.graph.evaluation import EVAL_PACKAGES
from pipeline.graph.machine import Machine
from pipeline.graph.stage import Stage
from pipeline.recipe import Recipe
from pipeline.serving import vllm as vllm_target
from pipeline.stage_id import EVAL_CORPUS, REFERENCE, SOURCE, Kind, StageId
from pipeline.stages import evaluate, package, serve_check
from pipeline.tools import environments
from pipeline.versions import versions

ENGINE = "vllm"


def stages(recipe: Recipe, jobs: list[package.PackageJob], machine: Machine) -> tuple[list[Stage], list[str]]:
    """`jobs`: every artifact's package job (pipeline.graph.packaging.jobs). Returns the stages and the
    notes for what was skipped."""
    ev = recipe.evaluation
    servable = [j for j in jobs if j.kind in vllm_target.KINDS]
    if not (ev.enabled and ev.vllm and servable):
        return [], []
    env = environments.get("vllm")
    if not machine.vllm_ready:
        return [], [
            "vLLM serve checks and evaluation skipped: vLLM's environment is not set up on this "
            f"machine ({env.setup_hint()}; "
            "evaluation.vllm: false turns them off)"
        ]
    base = package.PackageJob(
        recipe_name=recipe.name,
        artifact="base",
        format="base",
        kind="compressed-tensors",
        description="the unquantized base model",
        tags=[],
        spec=recipe.package,
        recipe_excerpt="",
        quantize_id=SOURCE,
        versions={},
    )
    checks, evals, notes = [], [], []
    if ev.kld != "exact":
        notes.append(
            "vLLM evaluation skipped: it needs the base's full log-probs (evaluation.kld: exact); "
            "serve checks still run"
        )
    for job in [base, *servable]:
        check, model = StageId(Kind.SERVE_CHECK, job.artifact), job.quantize_id
        checks.append(
            Stage(
                id=check,
                kind=Kind.SERVE_CHECK,
                describe=f"start it in vLLM ({serve_check.config_name()}) and ask it",
                config={
                    "version": serve_check.VERSION,
                    "job": job.config(),
                    "env": env.key,
                    "env_resolved": machine.vllm_resolved,
                    "config": serve_check.config_name(),
                    ARGS: {"job": job.to_json()},
                },
                deps=[SOURCE] if job is base else [SOURCE, model],
                versions={"vllm": " ".join(env.requirements)},
                artifact=None if job is base else job.artifact,
            )
        )
        if ev.kld != "exact":
            continue
        sid = StageId(Kind.FLOOR, ENGINE) if job is base else StageId(Kind.EVALUATE, job.artifact, ENGINE)
        evals.append(
            Stage(
                id=sid,
                kind=Kind.FLOOR if job is base else Kind.EVALUATE_ENGINE,
                describe="quality vs base, speed, through vLLM"
                + (" (the unquantized model: vLLM's floor)" if job is base else ""),
                config={
                    "version": evaluate.VERSION,
                    "engine": ENGINE,
                    "env": env.key,
                    "env_resolved": machine.vllm_resolved,
                    "speed": ev.speed.model_dump(mode="json"),
                    ARGS: {"evaluation": ev.model_dump(mode="json"), "model": model, "check": check},
                },
                deps=[model, check, EVAL_CORPUS, REFERENCE],
                versions=versions(EVAL_PACKAGES),
                artifact=None if job is base else job.artifact,
                link=f"evaluation/{sid.label.removeprefix('evaluate-')}",
            )
        )
    return checks + evals, notes


def refusals(recipe: Recipe, machine: Machine) -> list[str]:
    """What vLLM's CPU build on this machine will not serve, and why (its engine declares it: FP4, block FP8
    without AMX, 8-bit weight-only, ...), said at plan time whether or not the run evaluates in vLLM."""
    if environments.accelerator() != "cpu":
        return []
    found = []
    for o in recipe.formats:
        why = ENGINES[ENGINE].refuses(FORMATS[o.format].backend.scheme(o), machine.cpu_flags)
        if why and FORMATS[o.format].backend.kind in vllm_target.KINDS:
            found.append(f"{o.artifact}: this machine cannot serve it in vLLM: {why}; its vllm.yaml is for a GPU")
    return found
