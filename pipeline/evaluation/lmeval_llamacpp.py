"""An lm-eval model backed by llama.cpp (llama-cpp-python), scoring with the exact logits of the GGUF.

lm-eval's own `gguf` model is an HTTP client that needs prompt log-probs from `/v1/completions` with
`echo`; llama-cpp-python's server returns those shifted and without the generated token, so
multiple-choice scores come out at chance (measured: 0.25 on a 4-choice task, and ':' after 'Answer'
at -13.6 instead of -0.007). This adapter gives lm-eval the same numbers our perplexity uses; the
metrics, prompts and aggregation stay lm-eval's."""

from __future__ import annotations

from typing import Any

from lm_eval import utils
from lm_eval.api.model import TemplateLM


class LlamaCppLM(TemplateLM):
    def __init__(self, engine: Any) -> None:
        """Over a loaded pipeline.engines.llamacpp.LlamaCppEngine (no second load of the GGUF)."""
        super().__init__()
        self.engine = engine
        self.llm, self.n_ctx = engine.llm, engine.n_ctx
        self.add_bos = bool(self.llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true")

    @property
    def eot_token_id(self) -> int:
        return self.llm.token_eos()

    @property
    def prefix_token_id(self) -> int:
        return self.llm.token_bos() if self.add_bos else self.llm.token_eos()

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.llm.tokenize(
            string.encode(), add_bos=self.add_bos if add_special_tokens is None else add_special_tokens, special=False
        )

    def _loglikelihood_tokens(
        self, requests: list, disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        out = []
        for _, context_enc, continuation_enc in requests:
            ids = (context_enc + continuation_enc)[-self.n_ctx :]
            n = len(continuation_enc)
            lp = self.engine.logprobs(ids)[len(ids) - n - 1 : len(ids) - 1]
            picked = [float(lp[i, t]) for i, t in enumerate(continuation_enc)]
            out.append((sum(picked), bool(all(lp[i].argmax() == t for i, t in enumerate(continuation_enc)))))
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        out = []
        for (string,) in [r.args for r in requests]:
            windows = map(
                utils.make_disjoint_window,
                utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string, add_special_tokens=False),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.n_ctx,
                    context_len=1,
                ),
            )
            out.append(sum(ll for ll, _ in self._loglikelihood_tokens([(None, c, t) for c, t in windows])))
        return out

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        out = []
        for context, gen_kwargs in [r.args for r in requests]:
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else until
            r = self.llm.create_completion(
                context, max_tokens=gen_kwargs.get("max_gen_toks", 256), stop=until, temperature=0.0
            )
            out.append(r["choices"][0]["text"])
        return out
