"""OpenVINO: OpenVINO IR directories (the openvino-* formats, and the unquantized export as the floor),
run by a worker child in the OpenVINO environment (pipeline.tools.optimum_intel); nothing of OpenVINO is
imported here.

Quality: full log-probs of every position from optimum-intel's OVModelForCausalLM (exact KLD), on the
CPU plugin with its default precision and KV-cache settings, as openvino-genai serves it (both are
recorded). Speed: openvino-genai's LLMPipeline timings (TTFT, time per output token) of one greedy
request at batch 1, repeated until settled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engines import Engine, Settings, register
from pipeline.evaluation import speed
from pipeline.tools import cpus, optimum_intel


@register
class OpenVinoEngine(Engine):
    name = "openvino"
    title = "OpenVINO"
    floor = "openvino-export"
    runs_tasks = False  # no lm-eval model over the worker (yet): tasks are measured on the other artifacts

    def __init__(self, path: Path, settings: Settings = Settings()) -> None:
        self.workdir = settings.workdir or path.parent
        self.threads = settings.threads or cpus.count()
        self.worker = optimum_intel.Worker(path, self.threads, self.workdir / "openvino-worker.log")
        self.info = self.worker.ask("info")

    def logprobs(self, ids: list[int]) -> np.ndarray:
        out = self.workdir / ".logprobs.npy"
        try:
            self.worker.ask("logprobs", ids=ids, out=str(out))
            return np.load(out)
        finally:
            out.unlink(missing_ok=True)

    def weight_bytes(self) -> int:
        # The IR's weights file: exact for tied embeddings (SmolLM2, Llama-3.2-1B); for untied ones it
        # also counts the input embedding, which a decoded token only looks up.
        return int(self.info["weight_bytes"])

    def close(self) -> None:
        self.worker.close()

    def speed(self, prompt_ids: list[int], spec: Any) -> dict[str, Any]:
        def once() -> dict[str, float]:
            m = self.worker.ask("generate", ids=prompt_ids, max_new_tokens=spec.decode_tokens)
            return {
                "pp_tps": 1000 * len(prompt_ids) / m["ttft_ms"],
                "ttft_ms": m["ttft_ms"],
                "tg_tps": 1000 / m["tpot_ms"],
            }

        for _ in range(spec.warmup):
            once()
        result = speed.until_settled(
            lambda: [once()], ("pp_tps", "tg_tps", "ttft_ms"), spec.repeats, spec.tolerance, spec.budget_s
        )
        props = {k.lower(): self.info[k] for k in ("INFERENCE_PRECISION_HINT", "KV_CACHE_PRECISION")}
        return {
            "engine": f"openvino-genai {self.info['openvino']}",
            "device": "cpu",
            "threads": self.threads,
            **props,
            **result,
        }
