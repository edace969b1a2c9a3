"""llama.cpp: GGUF files, through llama-cpp-python (the same llama.cpp build as our tools) for exact
logits, llama.cpp's own llama-bench for speed. Its floor is the F16/BF16 conversion every GGUF type is
quantized from: the unquantized model as llama.cpp runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.checkpoints import gguf_header
from pipeline.engines import Engine, Settings, log_softmax, register
from pipeline.evaluation import speed
from pipeline.evaluation.lmeval_llamacpp import LlamaCppLM
from pipeline.tools import cpus, llamacpp_toolchain


def gguf_file(artifact: Path) -> Path:
    """The (first shard of the) GGUF file in an artifact directory."""
    files = sorted(artifact.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {artifact}")
    return files[0]


@register
class LlamaCppEngine(Engine):
    name = "llama.cpp"
    title = "llama.cpp"
    floor = "gguf-convert"

    def __init__(self, path: Path, settings: Settings = Settings()) -> None:
        from llama_cpp import Llama

        self.path = gguf_file(path) if path.is_dir() else path
        self.threads = threads = settings.threads or cpus.count()
        self.n_ctx = settings.n_ctx
        # logits_all: llama.cpp keeps the logits of every position, not only the last one.
        self.llm = Llama(
            model_path=str(self.path),
            n_ctx=settings.n_ctx,
            n_batch=settings.n_ctx,
            n_ubatch=settings.n_ctx,
            logits_all=True,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

    def logprobs(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return log_softmax(np.asarray(self.llm.scores[: len(ids)], dtype=np.float32))

    def weight_bytes(self) -> int:
        return gguf_weight_bytes(self.path)

    def lm_eval_model(self) -> Any:
        return LlamaCppLM(self)

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None

    def speed(self, prompt_ids: list[int], spec: Any) -> dict[str, Any]:
        """llama-bench (pp = prompt tokens, tg = decode tokens; it warms up itself), called in batches of
        `repeats` until the samples settle or the budget is spent. Our own copy is closed first: the
        tool loads the file itself."""
        import json

        self.close()
        threads = self.threads
        cmd = [
            str(llamacpp_toolchain.require().tool("llama-bench")),
            "-m",
            str(self.path),
            "-p",
            str(spec.prompt_tokens),
            "-n",
            str(spec.decode_tokens),
            "-r",
            str(spec.repeats),
            "-t",
            str(threads),
            "-o",
            "json",
        ]
        peak = [0.0]

        def batch() -> list[dict[str, float]]:
            out, rss = speed.run_child(cmd)
            peak[0] = max(peak[0], rss)
            rows = json.loads(out)
            pp = next(r for r in rows if r["n_prompt"] and not r["n_gen"])["samples_ts"]
            tg = next(r for r in rows if r["n_gen"] and not r["n_prompt"])["samples_ts"]
            return [
                {"pp_tps": p, "tg_tps": t, "ttft_ms": 1000 * spec.prompt_tokens / p}
                for p, t in zip(pp, tg, strict=True)
            ]

        result = speed.until_settled(
            batch, ("pp_tps", "tg_tps", "ttft_ms"), spec.repeats, spec.tolerance, spec.budget_s
        )
        return {
            "engine": "llama.cpp (llama-bench)",
            "device": "cpu",
            "threads": threads,
            **result,
            "peak_rss_mb": round(peak[0], 1),
        }

    @classmethod
    def floor_model(cls, stage_output: Path) -> Path:
        return gguf_file(stage_output)


def gguf_weight_bytes(path: Path) -> int:
    """Tensor bytes read per decoded token: all of them, less the token embedding when a separate
    output matrix exists."""
    files = sorted(path.parent.glob(path.name.replace("-00001-of-", "-*-of-"))) if "-00001-of-" in path.name else [path]
    sizes: dict[str, int] = {}
    for f in files:
        sizes.update({t.name: t.n_bytes for t in gguf_header.read(f).tensors})
    total = sum(sizes.values())
    return total - sizes.get("token_embd.weight", 0) if "output.weight" in sizes else total
