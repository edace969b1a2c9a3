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

EXPERT_COUNT = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
EXPERT_WIDTH = ("moe_intermediate_size", "expert_intermediate_size", "ffn_hidden_size", "intermediate_size")
PER_TOKEN = ("num_experts_per_tok", "experts_per_token", "moe_topk", "moe_k", "moe_top_k")
# DBRX names the usual fields its own way and nests its MoE settings (transformers' DbrxConfig.attribute_map)
ALIASES = {"d_model": "hidden_size", "n_heads": "num_attention_heads", "n_layers": "num_hidden_layers"}


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's config, flattened where an architecture nests it: a multimodal model's
    text_config, DBRX's ffn_config and attn_config (and its own names for the usual fields)."""
    cfg = dict(config.get("text_config") or config)
    for nested in ("ffn_config", "attn_config"):
        if isinstance(cfg.get(nested), dict):
            cfg = {**cfg[nested], **cfg}
    for theirs, ours in ALIASES.items():
        if theirs in cfg and ours not in cfg:
            cfg[ours] = cfg[theirs]
    if "kv_n_heads" in cfg and "num_key_value_heads" not in cfg:
        cfg["num_key_value_heads"] = cfg["kv_n_heads"]
    return cfg


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


def sparse_layers(config: dict[str, Any]) -> int:
    """Decoder layers that hold experts, by each family's way of saying which: DeepSeek/GLM's dense first
    layers, Qwen's mlp_only_layers and sparse step, ERNIE's start/end/interval, Llama 4's moe_layers."""
    cfg = text_config(config)
    layers = int(cfg["num_hidden_layers"])
    if isinstance(cfg.get("moe_layers"), list):
        return len(cfg["moe_layers"])
    if cfg.get("moe_layer_start_index") is not None:
        end = cfg.get("moe_layer_end_index")
        end = layers - 1 if end is None or end < 0 else end
        return len(range(int(cfg["moe_layer_start_index"]), end + 1, int(cfg.get("moe_layer_interval") or 1)))
    step = int(cfg.get("interleave_moe_layer_step") or cfg.get("decoder_sparse_step") or 1)
    dense = len(cfg.get("mlp_only_layers") or []) + int(cfg.get("first_k_dense_replace") or 0)
    return len(range(step - 1, layers, step)) - dense


def expert_params(config: dict[str, Any]) -> int:
    cfg = text_config(config)
    width = next((int(cfg[k]) for k in EXPERT_WIDTH if cfg.get(k)), None)
    if width is None:  # a KeyError: the estimates say "the config lacks a shape" rather than guess
        raise KeyError("the experts' width (moe_intermediate_size or intermediate_size)")
    return sparse_layers(config) * experts(config) * 3 * width * cfg["hidden_size"]


def per_expert_loadable(config: dict[str, Any]) -> bool:
    """Whether transformers loads a checkpoint of this family that stores one tensor per expert and
    projection (what llm-compressor writes): it does where its loader merges them into the fused
    in-memory experts (a WeightConverter from `experts.*.`), as for every family whose Hub checkpoints
    are per expert. Families stored fused (gpt-oss, Granite-MoE, DBRX, Llama 4) have no such converter."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    model_type = text_config(config).get("model_type") or config.get("model_type", "")
    mapping = get_checkpoint_conversion_mapping(model_type) or []
    return any("experts.*." in p for c in mapping for p in getattr(c, "source_patterns", []) or [])


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


def checkpoint_expert_names(config: dict[str, Any]) -> dict[str, str]:
    """llm-compressor's per-expert projection names -> the names this family's checkpoints give them, read from
    transformers' own loader: its converters merge `experts.*.w1.weight` + `experts.*.w3.weight` into
    `gate_up_proj` (Mixtral, PhiMoE) or `experts.*.gate_proj.weight` + ... (Qwen, DeepSeek: unchanged)."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    model_type = text_config(config).get("model_type") or config.get("model_type", "")
    names: dict[str, str] = {}
    for converter in get_checkpoint_conversion_mapping(model_type) or []:
        found = [re.search(r"experts\.\*\.(\w+)\.weight", p) for p in getattr(converter, "source_patterns", [])]
        target = " ".join(getattr(converter, "target_patterns", []))
        if not found or not all(found):
            continue
        if target.endswith("gate_up_proj") and len(found) == 2:
            names["gate_proj"], names["up_proj"] = found[0].group(1), found[1].group(1)
        elif target.endswith("down_proj") and len(found) == 1:
            names["down_proj"] = found[0].group(1)
    return {ours: theirs for ours, theirs in names.items() if ours != theirs}


def restore_expert_names(checkpoint: Path, config: dict[str, Any]) -> int:
    """Give a saved checkpoint's experts the projection names of the architecture's own checkpoints.

    llm-compressor 0.14 linearizes fused experts into Linear modules named gate_proj/up_proj/down_proj
    and saves them so: a Mixtral or PhiMoE artifact then holds `experts.0.down_proj` where their checkpoints
    (and the loaders of transformers and vLLM) have `experts.0.w2`. Renamed shard by shard, in place;
    returns the number of tensors renamed."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    theirs = checkpoint_expert_names(config)
    if not theirs:
        return 0
    pattern = re.compile(rf"(\.experts\.\d+\.)({'|'.join(theirs)})(?=\.)")

    def renamed(name: str) -> str:
        return pattern.sub(lambda m: m.group(1) + theirs[m.group(2)], name)

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
