"""The engines that score an artifact: transformers for HF checkpoints, llama.cpp for GGUF files.

Both take the same token ids and return log-probs for every position, so numbers from different
formats are comparable (same text, same tokenization, same windows)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.metrics import log_softmax


def gguf_file(artifact: Path) -> Path:
    """The (first shard of the) GGUF file in an artifact directory."""
    files = sorted(artifact.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {artifact}")
    return files[0]


class HFEngine:
    name = "transformers"

    def __init__(self, path: Path, threads: int | None = None, trust_remote_code: bool = False, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if threads:
            torch.set_num_threads(threads)
        self.device = device
        # float32 on CPU: bf16 matmuls are several times slower there; compressed-tensors decompress on load.
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, device_map=device, trust_remote_code=trust_remote_code)
        self.model.eval()

    def logprobs(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.model(torch.tensor([ids], device=self.device)).logits[0].float().cpu().numpy()
        return log_softmax(logits)

    def weight_bytes(self) -> int:
        """Bytes of weights read per decoded token as this engine holds them (the input embedding is a lookup)."""
        emb = self.model.get_input_embeddings().weight
        tied = self.model.get_output_embeddings() is not None and self.model.get_output_embeddings().weight is emb
        total = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return total if tied else total - emb.numel() * emb.element_size()


class LlamaCppEngine:
    name = "llama.cpp"

    def __init__(self, path: Path, n_ctx: int, threads: int | None = None) -> None:
        from llama_cpp import Llama

        self.path = gguf_file(path) if path.is_dir() else path
        threads = threads or os.cpu_count() or 1
        # logits_all: llama.cpp keeps the logits of every position, not only the last one.
        self.llm = Llama(model_path=str(self.path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                         n_threads=threads, n_threads_batch=threads, verbose=False)

    def logprobs(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return log_softmax(np.asarray(self.llm.scores[: len(ids)], dtype=np.float32))

    def weight_bytes(self) -> int:
        return gguf_weight_bytes(self.path)


def gguf_weight_bytes(path: Path) -> int:
    """Tensor bytes read per decoded token: all of them, less the token embedding when a separate output matrix exists."""
    from gguf import GGUFReader

    files = sorted(path.parent.glob(path.name.replace("-00001-of-", "-*-of-"))) if "-00001-of-" in path.name else [path]
    sizes: dict[str, int] = {}
    for f in files:
        sizes.update({t.name: int(t.n_bytes) for t in GGUFReader(f).tensors})
    total = sum(sizes.values())
    return total - sizes.get("token_embd.weight", 0) if "output.weight" in sizes else total


def open_engine(engine: str, path: Path, n_ctx: int, threads: int | None, trust_remote_code: bool) -> Any:
    if engine == "llama.cpp":
        return LlamaCppEngine(path, n_ctx, threads)
    return HFEngine(path, threads, trust_remote_code)
