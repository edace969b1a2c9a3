"""A model's size as the cost model needs it, from its config.json alone (plan time: no weights read).

Counts follow the tensors a decoder checkpoint holds: attention (q, k, v, o), the MLP (gate, up, down)
or the routed experts and their router, the embedding and, unless tied, the output head. Norms are left
out (under 0.01 % of any model we know). A test checks the totals against the published counts of the
shape twins' architectures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.backends import gguf_rows
from pipeline.checkpoints import moe


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    vocab: int
    linear: int  # parameters in the decoder layers' Linear weights (what llm-compressor quantizes)
    active_linear: int  # of those, what one token computes with (MoE: top-k of the routed experts)
    embeddings: int  # embedding plus an untied output head
    head: int  # the output head's parameters (the embedding's when tied): every token's logits cost this
    tensors: int  # weight tensors as the checkpoint stores them (one per expert and projection)
    experts: int  # routed experts per layer (0: dense)
    column_work: int  # sum over every Linear of out x in^2: what GPTQ's column-by-column update costs
    columns: int  # sum over every Linear of its input width: GPTQ visits each column in a Python loop
    hessian_bytes: int  # GPTQ's float32 in x in Hessians of one layer's Linears, held together
    gguf_sampled: int  # weights the sensitivity ladder quantizes: GGUF tensors (experts stacked) cut to 1 M each

    @property
    def params(self) -> int:
        return self.linear + self.embeddings

    @property
    def active(self) -> int:
        return self.active_linear + self.embeddings

    def bytes(self, bits: float = 16) -> int:
        return int(self.params * bits / 8)

    def forward_flops(self, tokens: int) -> float:
        """Multiply-adds x 2 of a forward pass over `tokens` (weights only: attention over a few hundred
        positions adds under 10 % at these widths)."""
        return 2.0 * tokens * (self.active_linear + self.head)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        cfg = moe.text_config(config)
        h, layers, vocab = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
        heads = int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or h // heads)
        q, kv = heads * head_dim, int(cfg.get("num_key_value_heads") or heads) * head_dim
        attention = layers * (2 * h * q + 2 * h * kv)
        n_experts = moe.experts(config)
        column_work = layers * (q * h * h + 2 * kv * h * h + h * q * q)  # q, k, v (in: h) and o (in: q)
        columns = layers * (3 * h + q)
        sample = layers * (2 * _cut(h * q) + 2 * _cut(h * kv))
        hessians = 3 * h * h + q * q  # q, k, v, o
        if n_experts > 1:
            experts = moe.expert_params(config)
            width = experts // (layers * n_experts * 3 * h)
            routers = layers * n_experts * h
            linear = attention + experts + routers
            active = attention + experts * moe.per_token(config) // n_experts + routers
            tensors = layers * (4 + 3 * n_experts + 1)
            column_work += layers * n_experts * (2 * width * h * h + h * width * width)
            columns += layers * n_experts * (2 * h + width)
            hessians += n_experts * (2 * h * h + width * width)
            gate_up = min(n_experts * h * width, max(gguf_rows.MAX_ELEMENTS, n_experts * gguf_rows.MIN_ROWS * h))
            down = min(n_experts * h * width, max(gguf_rows.MAX_ELEMENTS, n_experts * gguf_rows.MIN_ROWS * width))
            sample += layers * (2 * gate_up + down + _cut(h * n_experts))
        else:
            width = int(cfg["intermediate_size"])
            linear = active = attention + layers * 3 * h * width
            tensors = layers * 7
            n_experts = 0
            column_work += layers * (2 * width * h * h + h * width * width)
            columns += layers * (2 * h + width)
            hessians += 2 * h * h + width * width
            sample += layers * 3 * _cut(h * width)
        tied = bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
        embeddings = vocab * h * (1 if tied else 2)
        sample += _cut(vocab * h) * (1 if tied else 2)
        return cls(
            layers,
            h,
            vocab,
            linear,
            active,
            embeddings,
            vocab * h,
            tensors + 2 - tied,
            n_experts,
            column_work,
            columns,
            4 * hessians,
            sample,
        )


def _cut(elements: int) -> int:
    """What the sensitivity ladder quantizes of a tensor: wider ones are cut to a row sample."""
    return min(elements, gguf_rows.MAX_ELEMENTS)
