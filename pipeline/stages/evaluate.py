"""Evaluate stage, one per artifact (and one per engine floor): quality against the reference on the
same token ids, lm-eval tasks and speed, all in the engine that serves the artifact (pipeline.engines:
llama.cpp for GGUF, transformers otherwise). The engine is loaded once (speed is measured on it too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import engines
from pipeline.evaluation import lmeval, speed
from pipeline.evaluation.metrics import Reference, score
from pipeline.fingerprint import ARGS
from pipeline.recipe import EvaluationSpec
from pipeline.stage_id import EVAL_CORPUS, REFERENCE
from pipeline.stages import eval_corpus, package
from pipeline.stages.reference import METRICS, prompt_ids
from pipeline.stages.reference import fingerprint as task_files
from pipeline.tools import vllm_server

# 2: engines registry, exact KLD, scoring convention, settled speed; 3: speed on the loaded model; 4: compressed
# mixture-of-experts artifacts from a dense decompression in transformers
VERSION = 4


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    """evaluate[ARTIFACT], floor[ENGINE] and evaluate[ARTIFACT@ENGINE]: config["engine"] measures the output of
    the stage args["model"] names; a floor loads what its engine makes of the base (Engine.floor_model); with
    args["check"], only when that serve check started it."""
    a, engine = config[ARGS], config["engine"]
    ev = EvaluationSpec.model_validate(a["evaluation"])
    model, corpus, ref = inputs[a["model"]], inputs[EVAL_CORPUS], inputs[REFERENCE]
    if a.get("check"):
        return run_if_served(ev, engine, model, inputs[a["check"]], corpus, ref, out, ctx)
    if a.get("floor"):
        model = engines.get(engine).floor_model(model)
    return measure(ev, engine, model, corpus, ref, out, ctx)


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The local lm-eval task files, read afresh (the mid-run guard)."""
    return task_files(config)


def measure(
    ev: EvaluationSpec, engine_name: str, model: Path, corpus: Path, reference: Path, out: Path, ctx: Any
) -> dict[str, Any]:
    """`model`: the artifact directory, or for a floor the path the engine loads
    (pipeline.engines.Engine.floor_model)."""
    windows = eval_corpus.windows(corpus)
    ref = Reference.load(reference)
    base = json.loads((reference / METRICS).read_text())
    Engine = engines.get(engine_name)
    n_ctx = max(max(map(len, windows)), ev.speed.prompt_tokens + ev.speed.decode_tokens if ev.speed.enabled else 0)
    settings = engines.Settings(
        n_ctx=n_ctx,
        threads=ev.speed.threads,
        trust_remote_code=ctx.trust_remote_code,
        params=base.get("params"),
        workdir=out,
    )
    ctx.status(f"loading {model.name} in {engine_name}")
    engine = Engine(model, settings)
    metrics: dict[str, Any] = {
        "engine": engine_name,
        **score(engine, windows, ref, lambda i, n: ctx.status(f"scoring window {i}/{n}")),
    }
    if engine.caveat:
        metrics["caveat"] = engine.caveat
    files = (
        [model]
        if model.is_file()
        else [p for p in model.rglob("*") if p.is_file() and p.name not in ("stage_info.json", ".stage.json")]
    )
    metrics["size_bytes"] = sum(p.stat().st_size for p in files)
    if ev.tasks and Engine.runs_tasks:
        ctx.status(f"lm-eval: {', '.join(ev.tasks)}")
        metrics["tasks"] = lmeval.evaluate(
            engine.lm_eval_model(), ev.tasks, ev.task_limit, out, lmeval.task_dirs(ev.task_dirs)
        )
    if ev.speed.enabled:
        ctx.status(f"speed ({engine_name})")
        load, weight_bytes = speed.machine_load(), engine.weight_bytes()
        result = engine.speed(prompt_ids(windows, ev.speed.prompt_tokens), ev.speed)
        metrics["speed"] = {
            result["device"]: {**speed.roofline(result, weight_bytes, base["bandwidth_gbps"]), "machine": load}
        }
    engine.close()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def run_if_served(
    ev: EvaluationSpec, engine_name: str, model: Path, check: Path, corpus: Path, reference: Path, out: Path, ctx: Any
) -> dict[str, Any]:
    """`run` in an engine that serves other families' artifacts (vLLM), when the artifact's serve check
    started it; else the refusal, as a result (a refusal is a finding about the artifact, not a failure)."""
    started = json.loads((check / package.SERVE_CHECK).read_text())
    if started["status"] != "ok":
        result = {"engine": engine_name, "refused": started.get("reason") or started["status"]}
    else:
        try:
            return measure(ev, engine_name, model, corpus, reference, out, ctx)
        except (
            vllm_server.ServerFailed
        ) as e:  # started from the package's config, but not with the evaluation's options
            result = {"engine": engine_name, "refused": str(e)}
    ctx.status(f"not measured in {engine_name}: {result['refused']}")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result
