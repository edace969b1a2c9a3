"""Reference stage: the unquantized model, once per run, in transformers: its log-probs over the
evaluation windows (what every artifact is compared with, pipeline.evaluation.metrics), its own
perplexity, lm-eval scores and speed, and this machine's memory bandwidth (for the decode roofline).

The model is loaded once: scoring, lm-eval and speed share it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engines import Settings
from pipeline.engines.hf import HFEngine
from pipeline.evaluation import lmeval, speed
from pipeline.evaluation.metrics import Reference
from pipeline.fingerprint import ARGS
from pipeline.recipe import EvaluationSpec
from pipeline.stage_id import EVAL_CORPUS, SOURCE
from pipeline.stages import eval_corpus

VERSION = 3  # 2: float16 full log-probs (exact KLD), scoring convention, settled speed; 3: speed on the loaded model
METRICS = "metrics.json"


def prompt_ids(windows: list[list[int]], n: int) -> list[int]:
    """The speed prompt: the first n tokens of the evaluation text (plan checks there are enough)."""
    return [t for w in windows for t in w][:n]


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The local lm-eval task files, read afresh (the mid-run guard), when the stage's key holds them."""
    if "task_files" not in config:
        return {}
    ev = EvaluationSpec.model_validate(config[ARGS]["evaluation"])
    return {"task_files": lmeval.fingerprint(ev.tasks, lmeval.task_dirs(ev.task_dirs))}


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    ev = EvaluationSpec.model_validate(config[ARGS]["evaluation"])
    return measure(ev, inputs[SOURCE], inputs[EVAL_CORPUS], out, ctx)


def measure(ev: EvaluationSpec, source: Path, corpus: Path, out: Path, ctx: Any) -> dict[str, Any]:
    windows = eval_corpus.windows(corpus)
    settings = Settings(n_ctx=max(map(len, windows)), threads=ev.speed.threads, trust_remote_code=ctx.trust_remote_code)
    engine = HFEngine(source, settings)
    ctx.status(f"loaded the base model ({str(engine.dtype).removeprefix('torch.')})")
    vocab = engine.model.get_output_embeddings().weight.shape[0]
    params = sum(p.numel() for p in engine.model.parameters())

    def logprobs():
        for i, w in enumerate(windows):
            ctx.status(f"base log-probs: window {i + 1}/{len(windows)}")
            yield engine.logprobs(w)

    ref = Reference.build(
        out, logprobs(), windows, "full" if ev.kld == "exact" else "top-k", min(ev.top_k, vocab), ev.score, vocab
    )
    ppl = float(np.exp(-np.mean(ref.target_lp)))
    meta = json.loads((out / "reference.json").read_text())
    metrics: dict[str, Any] = {
        "engine": "transformers",
        "dtype": str(engine.dtype).removeprefix("torch."),
        "ppl": ppl,
        "base_ppl": ppl,
        "ppl_increase_pct": 0.0,
        "kld": 0.0,
        "kld_p99": 0.0,
        "top1_pct": 100.0,
        "tokens": len(ref.target_lp),
        "kld_method": ref.method,
        "score": ref.score,
        "vocab": vocab,
        "params": params,
        "reference_bytes": meta["bytes"],
        "size_bytes": sum(p.stat().st_size for p in source.rglob("*.safetensors")),
    }
    if ev.tasks:
        ctx.status(f"lm-eval: {', '.join(ev.tasks)}")
        metrics["tasks"] = lmeval.evaluate(
            engine.lm_eval_model(), ev.tasks, ev.task_limit, out, lmeval.task_dirs(ev.task_dirs)
        )
    ctx.status("measuring memory bandwidth")
    metrics["bandwidth_gbps"] = round(speed.memory_bandwidth_gbps(), 2)
    if ev.speed.enabled:
        ctx.status("speed (transformers)")
        load, weight_bytes = speed.machine_load(), engine.weight_bytes()
        result = engine.speed(prompt_ids(windows, ev.speed.prompt_tokens), ev.speed)
        metrics["speed"] = {
            result["device"]: {**speed.roofline(result, weight_bytes, metrics["bandwidth_gbps"]), "machine": load}
        }
    engine.close()
    (out / METRICS).write_text(json.dumps(metrics, indent=2))
    return metrics
