"""Mixture-of-experts facts read from a config.json: is it one, how many parameters sit in its experts.

From the config alone (plan time, no weights read): routed experts are n_layers x n_experts x 3
projections x expert width x hidden size (gate, up, down: every MoE family we know); the rest is
estimated from the attention shapes and the embeddings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple


class Experts(NamedTuple):
    """How an architecture's checkpoint lays out its experts (as on the Hub: one tensor per expert and
    projection; transformers fuses them into (n_expert, ...) parameters at load and splits them on save)."""

    block: str
    count: str  # the config key of the number of experts
    width: str  # the config key of an expert's width
    gate: str
    up: str
    down: str


LAYOUTS = {
    "qwen3_moe": Experts("mlp", "num_experts", "moe_intermediate_size", "gate_proj", "up_proj", "down_proj"),
    "mixtral": Experts("block_sparse_moe", "num_local_experts", "intermediate_size", "w1", "w3", "w2"),
}
# What llm-compressor's MoE linearization calls every expert's projections, whatever the architecture.
LINEARIZED = {"gate_proj": "gate", "up_proj": "up", "down_proj": "down"}

EXPERT_COUNT = ("num_experts", "num_local_experts", "n_routed_experts")
EXPERT_WIDTH = ("moe_intermediate_size", "expert_intermediate_size", "intermediate_size")
PER_TOKEN = ("num_experts_per_tok", "experts_per_token", "moe_topk")


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("text_config") or config


def experts(config: dict[str, Any]) -> int:
    cfg = text_config(config)
    return max((int(cfg.get(k) or 0) for k in EXPERT_COUNT), default=0)


def is_moe(config: dict[str, Any]) -> bool:
    return experts(config) > 1


def per_token(config: dict[str, Any]) -> int:
    """Experts each token is routed to (top-k)."""
    cfg = text_config(config)
    return next((int(cfg[k]) for k in PER_TOKEN if cfg.get(k)), 1)


def active_params(config: dict[str, Any], total: int) -> int:
    """Parameters one token computes with, out of `total` (embeddings included, as model cards count
    them): all but the routed experts it is not sent to. Shared experts are always active."""
    if not is_moe(config):
        return total
    n = experts(config)
    return total - expert_params(config) * (n - per_token(config)) // n


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


def restore_expert_names(checkpoint: Path, config: dict[str, Any]) -> int:
    """Give a saved checkpoint's experts the projection names of the architecture's own checkpoints.

    llm-compressor 0.14 linearizes fused experts into Linear modules named gate_proj/up_proj/down_proj
    and saves them so: a Mixtral artifact then holds `experts.0.down_proj` where Mixtral checkpoints
    (and the loaders of transformers and vLLM) have `experts.0.w2`. Renamed shard by shard, in place;
    returns the number of tensors renamed."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    layout = LAYOUTS.get(text_config(config).get("model_type", ""))
    if layout is None or (layout.gate, layout.up, layout.down) == tuple(LINEARIZED):
        return 0
    pattern = re.compile(rf"(\.{re.escape(layout.block)}\.experts\.\d+\.)(gate_proj|up_proj|down_proj)(?=\.)")

    def renamed(name: str) -> str:
        return pattern.sub(lambda m: m.group(1) + getattr(layout, LINEARIZED[m.group(2)]), name)

    count = 0
    for shard in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            metadata, names = f.metadata(), list(f.keys())
        if all(renamed(n) == n for n in names):
            continue
        tensors = {renamed(k): v for k, v in load_file(str(shard)).items()}
        count += sum(renamed(n) != n for n in names)
        tmp = shard.with_name(f".{shard.name}.renamed")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(shard)
    index = checkpoint / "model.safetensors.index.json"
    if count and index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {renamed(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))
    return count
