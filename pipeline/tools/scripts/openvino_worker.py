"""Runs in the openvino environment: one OpenVINO model held for many requests (the engine's child).

    python openvino_worker.py MODEL_DIR THREADS

Requests arrive one JSON line at a time on stdin; each answer is one JSON line on the protocol stream
(the original stdout; the libraries' own chatter goes to stderr, i.e. the stage log):
  {"op": "info"}                                   -> device properties and weight bytes
  {"op": "logprobs", "ids": [...], "out": PATH}    -> float32 [len(ids), vocab] log-softmax saved to PATH (.npy)
  {"op": "generate", "ids": [...], "max_new_tokens": N}  -> openvino-genai's own TTFT / per-token timings
Quality runs on optimum-intel's OVModelForCausalLM (full logits of every position); speed on
openvino-genai's LLMPipeline, which is how the package is served. The first "generate" lets go of the
quality model, so the weights are never held twice."""

import gc
import json
import os
import sys
from pathlib import Path

import numpy as np


class Worker:
    def __init__(self, path: Path, threads: int) -> None:
        self.path, self.threads, self.model, self.pipe = path, threads, None, None
        self.config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": ""}

    def info(self, _: dict) -> dict:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(self.path / "openvino_model.xml", "CPU", self.config)
        props = {
            p: str(compiled.get_property(p))
            for p in ("INFERENCE_PRECISION_HINT", "KV_CACHE_PRECISION", "INFERENCE_NUM_THREADS")
        }
        return {
            "openvino": ov.get_version(),
            "cpu": core.get_property("CPU", "FULL_DEVICE_NAME"),
            **props,
            "weight_bytes": (self.path / "openvino_model.bin").stat().st_size,
        }

    def logprobs(self, req: dict) -> dict:
        import torch

        if self.model is None:
            from optimum.intel import OVModelForCausalLM

            self.model = OVModelForCausalLM.from_pretrained(self.path, ov_config=self.config, compile=True)
        ids = torch.tensor([req["ids"]])
        logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float()
        np.save(req["out"], torch.log_softmax(logits, dim=-1).numpy())
        return {"rows": int(logits.shape[0]), "vocab": int(logits.shape[1])}

    def generate(self, req: dict) -> dict:
        import openvino as ov
        import openvino_genai as genai

        if self.pipe is None:
            self.model = None
            gc.collect()
            # Without a scheduler config the pipeline keeps the KV cache of a repeated prompt: measured here, every
            # repetition after the first then "prefilled" 128 tokens in 6 ms. Prefix caching off: each one prefills.
            scheduler = genai.SchedulerConfig()
            scheduler.enable_prefix_caching = False
            self.pipe = genai.LLMPipeline(str(self.path), "CPU", scheduler_config=scheduler, **self.config)
        config = genai.GenerationConfig(max_new_tokens=req["max_new_tokens"], ignore_eos=True, do_sample=False)
        ids = np.array([req["ids"]], dtype=np.int64)
        result = self.pipe.generate(genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids))), config)
        m = result.perf_metrics
        return {"ttft_ms": m.get_ttft().mean, "tpot_ms": m.get_tpot().mean, "generated": m.get_num_generated_tokens()}


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a library prints goes to the log, never into the protocol
    worker = Worker(Path(sys.argv[1]), int(sys.argv[2]))
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            break
        try:
            answer = getattr(worker, req["op"])(req)
        except Exception as e:
            answer = {"error": f"{type(e).__name__}: {e}"}
        protocol.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
