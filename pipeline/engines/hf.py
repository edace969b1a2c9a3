"""transformers: HF checkpoints (compressed-tensors and bitsandbytes artifacts, and the base model).

Loaded in the compute dtype of pipeline.checkpoints.loading (float32 for small models on CPU, else the stored
dtype); compressed-tensors checkpoints decompress on load (mixture-of-experts ones from a dense copy written
by compressed-tensors' decompressor: pipeline.checkpoints.decompressed). Speed: a fixed prompt from the evaluation
text, then greedy decode one token at a time with the KV cache, repeated until the figures settle
(evaluation.speed), on the model already loaded: the stage runs in a worker process of its own."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.checkpoints import decompressed, loading, moe
from pipeline.engines import Engine, Settings, log_softmax, register
from pipeline.errors import StageError
from pipeline.evaluation import speed


@register
class HFEngine(Engine):
    name = "transformers"
    title = "transformers"

    def __init__(self, path: Path, settings: Settings = Settings(), device: str | None = None) -> None:
        import torch

        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.path, self.settings = path, settings
        self.device = device or loading.device()
        self.dtype = loading.compute_dtype(path, settings.params, self.device)
        if decompressed.fp4(path):
            self.dtype = torch.bfloat16
            self.caveat = "computed in bfloat16: compressed-tensors unpacks FP4 weights to bfloat16 only"
        if decompressed.needs_dense_load(path):
            self.caveat = decompressed.CAVEAT
            with tempfile.TemporaryDirectory(dir=settings.workdir, prefix=".dense-") as tmp:
                dense = decompressed.write_dense(path, Path(tmp) / "model", self.dtype)
                self.model = self._load(dense)
        else:
            self.model = self._load(path)
        self.model.eval()

    def _load(self, path: Path) -> Any:
        from transformers import AutoModelForCausalLM

        args = {
            "dtype": self.dtype,
            "device_map": self.device,
            "trust_remote_code": self.settings.trust_remote_code,
            "output_loading_info": True,
        }
        if moe.is_moe(json.loads((path / "config.json").read_text())):
            # transformers stacks the per-expert tensors at load; read in parallel ahead, every expert would
            # be held twice (loading.from_pretrained_pread)
            model, info = loading.from_pretrained_pread(path, sequential=True, **args)
        else:
            model, info = AutoModelForCausalLM.from_pretrained(path, **args)
        # transformers initialises weights it does not find at random and only logs it: an artifact whose
        # tensor names the architecture does not know (a quantized router, renamed experts) would be
        # measured as a different, random model.
        missing = sorted(info["missing_keys"])
        if missing:
            raise StageError(
                f"{path.name}: transformers found no weights for {len(missing)} parameters (first: {missing[0]}) "
                "and would initialise them at random"
            )
        return model

    def logprobs(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.model(torch.tensor([ids], device=self.device)).logits[0]
        return log_softmax(logits.cpu())

    def weight_bytes(self) -> int:
        emb = self.model.get_input_embeddings().weight
        out = self.model.get_output_embeddings()
        tied = out is not None and out.weight is emb
        total = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return total if tied else total - emb.numel() * emb.element_size()  # the input embedding is a lookup

    def lm_eval_model(self) -> Any:
        from lm_eval.models.huggingface import HFLM
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=self.settings.trust_remote_code)
        return HFLM(pretrained=self.model, tokenizer=tokenizer, batch_size=1)

    def close(self) -> None:
        self.__dict__.pop("model", None)

    def speed(self, prompt_ids: list[int], spec: Any) -> dict[str, Any]:
        """Prefill the prompt, then greedy-decode one token at a time with the KV cache, until settled."""
        import torch

        model, device = self.model, self.device
        ids = torch.tensor([prompt_ids], device=device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def once() -> dict[str, float]:
            sync()
            t0 = time.perf_counter()
            out = model(ids, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            sync()
            t1 = time.perf_counter()
            cache = out.past_key_values
            for _ in range(spec.decode_tokens):
                out = model(token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            sync()
            t2 = time.perf_counter()
            return {
                "pp_tps": ids.shape[1] / (t1 - t0),
                "ttft_ms": 1000 * (t1 - t0),
                "tg_tps": spec.decode_tokens / (t2 - t1),
            }

        with torch.no_grad():
            for _ in range(spec.warmup):
                once()
            result = speed.until_settled(
                lambda: [once()], ("pp_tps", "tg_tps", "ttft_ms"), spec.repeats, spec.tolerance, spec.budget_s
            )
        return {
            "engine": "transformers",
            "device": device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            **result,
            "rss_mb": speed.rss_mb(),
        }
