"""Reference stage: the unquantized model, once per run: its log-probs over the evaluation windows
(what every artifact is compared with), its own perplexity, speed and lm-eval scores, and this
machine's memory bandwidth (for the decode roofline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.recipe import EvaluationSpec
from pipeline.stages import eval_corpus

VERSION = 1
METRICS = "metrics.json"


def prompt_ids(windows: list[list[int]], n: int) -> list[int]:
    """The speed prompt: the first n tokens of the evaluation text (plan checks there are enough)."""
    return [t for w in windows for t in w][:n]


def run(ev: EvaluationSpec, source: Path, corpus: Path, out: Path, ctx: Any) -> dict[str, Any]:
    from pipeline.evaluation import lmeval, speed
    from pipeline.evaluation.engines import HFEngine
    from pipeline.evaluation.metrics import Reference

    windows = eval_corpus.windows(corpus)
    ctx.status("loading the base model (float32)")
    engine = HFEngine(source, ev.speed.threads, ctx.trust_remote_code)
    vocab = engine.model.get_output_embeddings().weight.shape[0]
    positions = sum(len(w) - 1 for w in windows)
    keep_full = positions * vocab * 4 <= ev.max_logits_mb * 2**20

    def logprobs():
        for i, w in enumerate(windows):
            ctx.status(f"base log-probs: window {i + 1}/{len(windows)}")
            yield engine.logprobs(w)

    ref = Reference.build(logprobs(), windows, keep_full, min(ev.top_k, vocab))
    ref.save(out)
    ppl = float(np.exp(-np.mean(ref.target_lp)))
    metrics: dict[str, Any] = {"engine": "transformers", "ppl": ppl, "base_ppl": ppl, "ppl_increase_pct": 0.0, "kld": 0.0, "kld_p99": 0.0,
                               "top1_pct": 100.0, "tokens": positions, "kld_method": ref.method, "vocab": vocab,
                               "size_bytes": sum(p.stat().st_size for p in source.rglob("*.safetensors"))}
    weight_bytes = engine.weight_bytes()
    del engine
    ctx.status("measuring memory bandwidth")
    metrics["bandwidth_gbps"] = round(speed.memory_bandwidth_gbps(), 2)
    if ev.speed.enabled:
        ctx.status("speed (transformers, CPU)")
        s = ev.speed
        result = speed.transformers_speed(source, prompt_ids(windows, s.prompt_tokens), s.decode_tokens, s.repeats, s.warmup,
                                          s.threads or 0, ctx.trust_remote_code)
        metrics["speed"] = {"cpu": speed.roofline(result, weight_bytes, metrics["bandwidth_gbps"])}
    if ev.tasks:
        ctx.status(f"lm-eval: {', '.join(ev.tasks)}")
        metrics["tasks"] = lmeval.evaluate("transformers", source, ev.tasks, ev.task_limit, out, ctx.trust_remote_code)
    (out / METRICS).write_text(json.dumps(metrics, indent=2))
    return metrics
