"""GGUF `type: auto`: one llama.cpp type per tensor, chosen at a size budget from measured sensitivity.

llama.cpp still writes the file (`llama-quantize --tensor-type-file`); we only choose. The choice
minimises the expected KLD, the sum of per-tensor costs from the sensitivity stage (which assumes
they add up, and records how well they did), under the budget: starting from each tensor's cheapest
type, the upgrade that saves the most KLD per byte is taken while it fits (backends/knapsack.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.backends import gguf_sensitivity, knapsack
from pipeline.backends.knapsack import MIB
from pipeline.errors import StageError
from pipeline.tools.processes import run_logged

TYPES_FILE = "tensor-types.txt"  # beside the artifact: what llama-quantize was told, tensor by tensor
CHOICE_FILE = "gguf-types.json"  # beside the artifact: the choice, its budget and its expected KLD
SIZE_UNITS = {"MB": 10**6, "GB": 10**9, "MiB": MIB, "GiB": 1024 * MIB}


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
        choice = knapsack.choose(sensitivity, budget)
    except knapsack.BudgetError as e:
        raise StageError(f"{opts.artifact}: {e}") from None
    ctx.status(
        f"chose {len(choice['types'])} tensor types: {choice['bpw']:.2f} bpw, expected KLD {choice['expected_kld']:.4f}"
    )
    type_file(choice, out / TYPES_FILE)
    summary = {k: choice[k] for k in ("expected_kld", "weights_bytes", "budget_bytes", "bpw", "histogram", "by_kind")}
    summary["additivity"] = {**sensitivity["additivity"], "probe": sensitivity["probe"]}
    (out / CHOICE_FILE).write_text(json.dumps({**summary, "types": choice["types"]}, indent=1))
    return {"auto": summary}
