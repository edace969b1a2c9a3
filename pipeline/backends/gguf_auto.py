"""GGUF `type: auto`: one llama.cpp type per tensor, chosen at a size budget from measured sensitivity.

llama.cpp still writes the file (`llama-quantize --tensor-type-file`); we only choose. The choice
minimises the expected KLD, the sum of per-tensor costs from the sensitivity stage (which assumes
they add up, and records how well they did), under the budget: starting from each tensor's cheapest
type, the upgrade that saves the most KLD per byte is taken while it fits (greedy along each
tensor's lower convex hull of (bytes, KLD), the classic solution of this knapsack's relaxation)."""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.backends import gguf_sensitivity
from pipeline.errors import StageError
from pipeline.tools.processes import run_logged

MIB = 1024 * 1024
TYPES_FILE = "tensor-types.txt"  # beside the artifact: what llama-quantize was told, tensor by tensor
CHOICE_FILE = "gguf-types.json"  # beside the artifact: the choice, its budget and its expected KLD
SIZE_UNITS = {"MB": 10**6, "GB": 10**9, "MiB": MIB, "GiB": 1024 * MIB}


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


def choose(sensitivity: dict[str, Any], budget: int) -> dict[str, Any]:
    """Types per tensor with the expected KLD and the weights' bytes; BudgetError when even the
    cheapest type of every tensor does not fit."""
    tensors = {n: v for n, v in sensitivity["tensors"].items() if v["types"]}
    fixed = sensitivity["weights_bytes"] - sum(v["bytes"] for v in tensors.values())  # norms etc. stay as they are
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


def type_file(choice: dict[str, Any], path: Path) -> Path:
    """llama-quantize's --tensor-type-file: one anchored pattern per tensor (its names are regexes)."""
    path.write_text("".join(f"^{re.escape(n)}$={t}\n" for n, t in sorted(choice["types"].items())))
    return path


def dry_run_bytes(lines: list[str]) -> int:
    """The quantized size `llama-quantize --dry-run` prints ("quant size  =    98.87 MiB (6.17 BPW)")."""
    for line in lines:
        m = re.search(r"quant size\s*=\s*([0-9.]+) MiB", line)
        if m:
            return int(float(m.group(1)) * MIB)
    raise ValueError("llama-quantize --dry-run printed no quant size")


def choose_for(
    opts: Any, chain: Any, base: Path, matrix: Path | None, sensitivity_dir: Path, out: Path, ctx: Any
) -> dict[str, Any]:
    """The choice for one auto format: budget from its options, types written to TYPES_FILE and
    CHOICE_FILE in `out`; returns the facts for the manifest."""
    sensitivity = gguf_sensitivity.output(sensitivity_dir)
    weights = sensitivity["weights_bytes"]
    if opts.like:
        ctx.status(f"size of {opts.like} (llama-quantize --dry-run)")
        cmd: list[Any] = [chain.tool("llama-quantize"), "--dry-run"] + (["--imatrix", matrix] if matrix else [])
        budget = dry_run_bytes(run_logged(cmd + [base, opts.like, "1"]))
    elif opts.target_bpw:
        elements = sum(v["elements"] for v in sensitivity["tensors"].values())
        budget = (
            weights - sum(v["bytes"] for v in sensitivity["tensors"].values()) + int(opts.target_bpw * elements / 8)
        )
    else:
        number, unit = re.match(r"([0-9.]+)(\D+)$", opts.target_size).groups()
        budget = int(float(number) * SIZE_UNITS[unit]) - (base.stat().st_size - weights)  # metadata and tokenizer stay
    try:
        choice = choose(sensitivity, budget)
    except BudgetError as e:
        raise StageError(f"{opts.artifact}: {e}") from None
    ctx.status(
        f"chose {len(choice['types'])} tensor types: {choice['bpw']:.2f} bpw, expected KLD {choice['expected_kld']:.4f}"
    )
    type_file(choice, out / TYPES_FILE)
    summary = {k: choice[k] for k in ("expected_kld", "weights_bytes", "budget_bytes", "bpw", "histogram", "by_kind")}
    summary["additivity"] = {**sensitivity["additivity"], "probe": sensitivity["probe"]}
    (out / CHOICE_FILE).write_text(json.dumps({**summary, "types": choice["types"]}, indent=1))
    return {"auto": summary}
