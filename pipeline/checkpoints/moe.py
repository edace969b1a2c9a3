"""Mixture-of-experts facts read from a config.json: is it one, how many parameters sit in its experts.

From the config alone (plan time, no weights read): routed experts are n_layers x n_experts x 3
projections x expert width x hidden size (gate, up, down: every MoE family we know); the rest is
estimated from the attention shapes and the embeddings."""

from __future__ import annotations

from typing import Any

EXPERT_COUNT = ("num_experts", "num_local_experts", "n_routed_experts")
EXPERT_WIDTH = ("moe_intermediate_size", "expert_intermediate_size", "intermediate_size")


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("text_config") or config


def experts(config: dict[str, Any]) -> int:
    cfg = text_config(config)
    return max((int(cfg.get(k) or 0) for k in EXPERT_COUNT), default=0)


def is_moe(config: dict[str, Any]) -> bool:
    return experts(config) > 1


def expert_params(config: dict[str, Any]) -> int:
    cfg = text_config(config)
    width = next(int(cfg[k]) for k in EXPERT_WIDTH if cfg.get(k))
    sparse_layers = (
        cfg["num_hidden_layers"] - len(cfg.get("mlp_only_layers") or []) - int(cfg.get("first_k_dense_replace") or 0)
    )
    return sparse_layers * experts(config) * 3 * width * cfg["hidden_size"]


def total_params(config: dict[str, Any]) -> int:
    cfg = text_config(config)
    h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    heads = cfg["num_attention_heads"]
    head = cfg.get("head_dim") or h // heads
    q, kv = heads * head, (cfg.get("num_key_value_heads") or heads) * head
    attention = layers * (2 * h * q + 2 * h * kv)
    router = layers * experts(config) * h
    embeddings = cfg["vocab_size"] * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return expert_params(config) + attention + router + embeddings
