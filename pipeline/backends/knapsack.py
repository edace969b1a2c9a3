"""The choice of one quantization type per tensor (or group of tensors) at a byte budget, shared by GGUF's
`type: auto` (backends/gguf_auto.py) and compressed-tensors' (backends/ct_auto.py).

It minimises the expected KLD, the sum of per-tensor costs from a sensitivity stage (which assumes they add
up, and records how well they did), under the budget: starting from each tensor's cheapest type, the upgrade
that saves the most KLD per byte is taken while it fits (greedy along each tensor's lower convex hull of
(bytes, KLD), the classic solution of this knapsack's relaxation).

`sensitivity`: {"weights_bytes": all weights as they are, "tensors": {name: {"bytes": as they are, "elements",
"kind", "types": {type: {"bytes", "kld"}}}}}."""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

MIB = 1024 * 1024


class BudgetError(ValueError):
    pass


def _hull(types: dict[str, dict[str, Any]]) -> list[tuple[int, float, str]]:
    """(bytes, kld, type) from cheapest to dearest, keeping only upgrades that pay less KLD per byte
    than the one before them (the lower convex hull)."""
    points = sorted((c["bytes"], c["kld"], t) for t, c in types.items())
    hull: list[tuple[int, float, str]] = []
    for p in points:
        if hull and p[1] >= hull[-1][1]:
            continue  # dearer and no better
        while len(hull) >= 2 and _slope(hull[-2], hull[-1]) <= _slope(hull[-1], p):
            hull.pop()  # p saves KLD at a better rate than hull[-1] did
        hull.append(p)
    return hull


def _slope(a: tuple[int, float, str], b: tuple[int, float, str]) -> float:
    return (a[1] - b[1]) / max(b[0] - a[0], 1)


def fixed_bytes(sensitivity: dict[str, Any]) -> int:
    """What the choice does not touch: embeddings, norms, and every weight no candidate applies to."""
    return sensitivity["weights_bytes"] - sum(v["bytes"] for v in sensitivity["tensors"].values() if v["types"])


def choose(sensitivity: dict[str, Any], budget: int) -> dict[str, Any]:
    """Types per tensor with the expected KLD and the weights' bytes; BudgetError when even the
    cheapest type of every tensor does not fit."""
    tensors = {n: v for n, v in sensitivity["tensors"].items() if v["types"]}
    fixed = fixed_bytes(sensitivity)
    hulls = {n: _hull(v["types"]) for n, v in tensors.items()}
    at = {n: 0 for n in hulls}
    used = fixed + sum(h[0][0] for h in hulls.values())
    if used > budget:
        raise BudgetError(
            f"{used / MIB:,.2f} MiB even at the cheapest type of every tensor, over the budget "
            f"of {budget / MIB:,.2f} MiB"
        )
    heap = [(-_slope(h[0], h[1]), n) for n, h in hulls.items() if len(h) > 1]
    heapq.heapify(heap)
    while heap:
        _, n = heapq.heappop(heap)
        h, i = hulls[n], at[n]
        step = h[i + 1][0] - h[i][0]
        if used + step > budget:
            continue  # this tensor's next step does not fit; smaller ones of others may
        used += step
        at[n] = i + 1
        if i + 2 < len(h):
            heapq.heappush(heap, (-_slope(h[i + 1], h[i + 2]), n))
    types = {n: hulls[n][at[n]][2] for n in hulls}
    elements = sum(v["elements"] for v in tensors.values())
    return {
        "types": types,
        "expected_kld": sum(hulls[n][at[n]][1] for n in hulls),
        "weights_bytes": used,
        "budget_bytes": budget,
        "bpw": 8 * (used - fixed) / elements,
        "histogram": dict(Counter(types.values()).most_common()),
        "by_kind": {
            k: dict(Counter(t for n, t in types.items() if tensors[n]["kind"] == k).most_common())
            for k in sorted({v["kind"] for v in tensors.values()})
        },
    }
