"""Tokens each expert of a mixture-of-experts model saw while llm-compressor calibrated it.

llm-compressor linearizes transformers' fused experts into one nn.Linear per expert and projection
and, with `moe_calibrate_all_experts` (its default, which we keep), runs every expert on every
calibration token while the router still decides what each token's output is. We count both, with
torch's global forward pre-hooks, for the stage info: `calibrated` rows through each expert's
projections (what its quantization statistics saw) and `routed` tokens the router sent it (an
expert the router never picks is calibrated all the same, but its share of the output is untested)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXPERT = re.compile(r"(?:^|\.)layers\.(\d+)\..*experts\.(\d+)\.[A-Za-z0-9_]+$")


@contextmanager
def counted(model: Any) -> Iterator[dict[str, Any]]:
    """Count while the block runs; the result dict is filled in when it ends (empty for a dense model)."""
    import torch

    rows: dict[int, int] = {}
    routed: dict[int, Any] = {}

    def pre_hook(module: Any, args: tuple[Any, ...]) -> None:
        if not args or not torch.is_tensor(args[0]):
            return
        if isinstance(module, torch.nn.Linear):
            rows[id(module)] = rows.get(id(module), 0) + args[0].reshape(-1, args[0].shape[-1]).shape[0]
        elif len(args) >= 2 and torch.is_tensor(args[1]) and not args[1].is_floating_point():
            n = getattr(module, "num_experts", None)  # an experts container called with the router's top-k ids
            if n:
                counts = torch.bincount(args[1].reshape(-1).cpu(), minlength=int(n))
                routed[id(module)] = counts if id(module) not in routed else routed[id(module)] + counts

    handle = torch.nn.modules.module.register_module_forward_pre_hook(pre_hook)
    result: dict[str, Any] = {}
    try:
        yield result
    finally:
        handle.remove()
    result.update(_by_layer(model, rows, routed))


def _by_layer(model: Any, rows: dict[int, int], routed: dict[int, Any]) -> dict[str, Any]:
    calibrated: dict[int, dict[int, int]] = {}
    sent: dict[int, list[int]] = {}
    for name, module in model.named_modules():
        m = EXPERT.search(name)
        if m and getattr(getattr(module, "weight", None), "dim", lambda: 0)() == 2:  # an expert's projection
            seen, n = calibrated.setdefault(int(m.group(1)), {}), rows.get(id(module), 0)
            expert = int(m.group(2))
            seen[expert] = min(seen.get(expert, n), n)  # the rows every projection of the expert saw
        if id(module) in routed:
            layer_match = re.search(r"layers\.(\d+)\.", name)
            if layer_match:
                sent[int(layer_match.group(1))] = [int(c) for c in routed[id(module)]]
    if not calibrated:
        return {}
    per_layer = {str(layer): [seen[e] for e in sorted(seen)] for layer, seen in sorted(calibrated.items())}
    return {
        "calibrated_rows": per_layer,
        "routed_tokens": {str(k): v for k, v in sorted(sent.items())},
        "min_calibrated_rows": min(min(v) for v in per_layer.values()),
        "experts_never_routed": sum(c == 0 for v in sent.values() for c in v),
    }
