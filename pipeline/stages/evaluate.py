"""Evaluate stage, one per artifact: quality against the reference on the same token ids, speed and
lm-eval tasks, all in the artifact's serving engine (llama.cpp for GGUF, transformers otherwise)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.recipe import EvaluationSpec
from pipeline.stages import eval_corpus
from pipeline.stages.reference import METRICS, prompt_ids

VERSION = 1


def run(ev: EvaluationSpec, engine_name: str, artifact: Path, corpus: Path, reference: Path, out: Path, ctx: Any) -> dict[str, Any]:
    from pipeline import llamacpp
    from pipeline.evaluation import lmeval, speed
    from pipeline.evaluation.engines import gguf_file, open_engine
    from pipeline.evaluation.metrics import Reference, score

    windows = eval_corpus.windows(corpus)
    ref = Reference.load(reference)
    base = json.loads((reference / METRICS).read_text())
    ctx.status(f"loading the artifact in {engine_name}")
    engine = open_engine(engine_name, artifact, max(len(w) for w in windows), ev.speed.threads, ctx.trust_remote_code)
    metrics: dict[str, Any] = {"engine": engine_name, **score(engine, windows, ref, lambda i, n: ctx.status(f"scoring window {i}/{n}"))}
    metrics["size_bytes"] = sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file() and p.name != "stage_info.json")
    weight_bytes = engine.weight_bytes()
    del engine  # the speed runs happen in their own processes, with their own memory
    if ev.speed.enabled:
        s = ev.speed
        ctx.status(f"speed ({engine_name}, CPU)")
        if engine_name == "llama.cpp":
            result = speed.llama_bench(llamacpp.require().tool("llama-bench"), gguf_file(artifact), s.prompt_tokens, s.decode_tokens,
                                       s.repeats, s.threads or os.cpu_count() or 1)
        else:
            result = speed.transformers_speed(artifact, prompt_ids(windows, s.prompt_tokens), s.decode_tokens, s.repeats, s.warmup,
                                              s.threads or 0, ctx.trust_remote_code)
        metrics["speed"] = {"cpu": speed.roofline(result, weight_bytes, base["bandwidth_gbps"])}
    if ev.tasks:
        ctx.status(f"lm-eval: {', '.join(ev.tasks)}")
        metrics["tasks"] = lmeval.evaluate(engine_name, artifact, ev.tasks, ev.task_limit, out, ctx.trust_remote_code)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
