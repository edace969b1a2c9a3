"""AWQ's smoothing mappings split by the kind of decoder layer, for models that mix dense and MoE layers.

A mapping smooths a norm's output and scales up every layer that reads it (its balance layers). In a
MoE layer the router reads the post-attention norm too, so the architecture's mapping lists it; a dense
layer (DeepSeek's and GLM-4.5's first layers, Llama 4's interleaved ones) has no router, and llm-compressor
0.14 then groups every layer's norm into one set and stops ("AWQ needs to match a single smoothlayer").
Upstream's answer for some of these families drops the router from the mapping, which leaves it reading
the smoothed output uncompensated: routing logits shift and near-tie tokens change experts. Here each
mapping is split into one per group of layers that read the norm through the same balance layers, each
anchored to its layers' indices, so the router stays compensated where it exists; a layer that has none of
a mapping's balance layers is left out of it (GLM-4.5's upstream mapping names only the experts' MLP).

The same split leaves out a layer whose balance layers are all unquantized (compressed-tensors `type: auto`
keeps some in bf16): llm-compressor 0.14 still resolves such a mapping when its smooth layer is quantized
(v_proj -> a bf16 o_proj, up_proj -> a bf16 down_proj) and then divides by zero averaging the balance layers'
quantized weights; there is nothing to balance there."""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from typing import Any

LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _matches(name: str, target: str) -> bool:
    # compressed-tensors' rule (compressed_tensors.utils.match_name): "re:" is re.match, else the exact name
    return re.match(target[3:], name) is not None if target.startswith("re:") else name == target


def _anchored(target: str, layers: list[int]) -> str:
    return f"re:(?=.*layers\\.(?:{'|'.join(map(str, layers))})\\.){target[3:]}"


def split_by_layer_kind(
    mappings: list[Any], module_names: list[str], unquantized: frozenset[str] = frozenset()
) -> list[Any]:
    """`mappings`: llm-compressor AWQMappings; `module_names`: the model's named_modules(); `unquantized`:
    modules left out of quantization by name (they count as absent). Mappings whose balance layers every
    decoder layer has come back as they were."""
    out = []
    for m in mappings:
        if not m.smooth_layer.startswith("re:") or not all(b.startswith("re:") for b in m.balance_layers):
            out.append(m)
            continue
        present: dict[int, set[str]] = defaultdict(set)  # layer -> balance patterns it has a module for
        smoothed: set[int] = set()
        for name in module_names:
            found = LAYER.search(name)
            if found is None:
                continue
            layer = int(found.group(1))
            if _matches(name, m.smooth_layer):
                smoothed.add(layer)
            if name not in unquantized:
                present[layer].update(b for b in m.balance_layers if _matches(name, b))
        groups: dict[frozenset[str], list[int]] = defaultdict(list)
        for layer in sorted(smoothed):
            if present[layer]:
                groups[frozenset(present[layer])].append(layer)
        if len(groups) <= 1 and sum(map(len, groups.values())) == len(smoothed):
            out.append(m)  # every layer the norm is in reads it through the same balance layers
            continue
        for balance, layers in groups.items():
            kept = [_anchored(b, layers) for b in m.balance_layers if b in balance]
            out.append(dataclasses.replace(m, smooth_layer=_anchored(m.smooth_layer, layers), balance_layers=kept))
    return out


def for_model(model: Any, unquantized: frozenset[str] = frozenset()) -> list[Any]:
    """The architecture's own mappings (llm-compressor's registry, or its inference for an unknown one),
    split where the model mixes dense and MoE layers or leaves some balance layers unquantized."""
    from llmcompressor.modifiers.transform.awq.dynamic_mappings import get_layer_mappings_from_model

    names = [n for n, _ in model.named_modules()]
    return split_by_layer_kind(get_layer_mappings_from_model(model), names, unquantized)
