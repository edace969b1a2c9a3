"""What a GGUF quantize stage costs (Backend.cost of pipeline.backends.gguf): llama-quantize is bound by
its own rate (measured by pipeline.cost.machine_speed); bits per weight from llama.cpp's own table.
`c` is the plan's pipeline.cost.model.CostInputs."""

from __future__ import annotations

from typing import Any

from pipeline.backends import MB, QuantizeCost

# llama.cpp's bits per weight of each file type (llama-quantize's own table, K-quant mixes at 7-8B shapes)
GGUF_BPW = {
    "Q2_K": 3.0,
    "Q3_K_S": 3.5,
    "Q3_K_M": 3.9,
    "Q3_K_L": 4.3,
    "Q4_0": 4.55,
    "Q4_K_S": 4.6,
    "Q4_K_M": 4.9,
    "Q5_0": 5.5,
    "Q5_K_S": 5.55,
    "Q5_K_M": 5.7,
    "Q6_K": 6.6,
    "Q8_0": 8.5,
    "F16": 16.0,
    "BF16": 16.0,
    # i-quants: llama-quantize's own nominal figures (its table has no 8B file sizes for them)
    "IQ1_S": 1.56,
    "IQ1_M": 1.75,
    "IQ2_XXS": 2.06,
    "IQ2_XS": 2.31,
    "IQ2_S": 2.5,
    "IQ2_M": 2.7,
    "IQ3_XXS": 3.06,
    "IQ3_XS": 3.3,
    "IQ3_S": 3.44,
    "IQ3_M": 3.66,
    "IQ4_XS": 4.25,
    "IQ4_NL": 4.5,
    "Q2_K_S": 3.0,  # the same 2.96G as Q2_K in llama-quantize's table
    # ternary types: llama-quantize's nominal figures
    "TQ1_0": 1.69,
    "TQ2_0": 2.06,
    # legacy types: llama-quantize's Llama-3-8B sizes
    "Q4_1": 4.78 * 2**30 * 8 / 8.03e9,
    "Q5_1": 5.65 * 2**30 * 8 / 8.03e9,
}
# Time per weight relative to Q4_K (search over scales with an importance matrix; Q8_0 is a plain round)
GGUF_SLOWER = {"Q2_K": 0.9, "Q3_K_S": 1.1, "Q3_K_M": 1.1, "Q3_K_L": 1.1, "Q6_K": 0.6, "Q8_0": 0.1, "Q4_0": 0.3}
# i-quants search a grid block by block: measured ~2.7x Q4_K's time in the sensitivity ladder (cost.stage_costs), and a
# mix holding IQ3_S/IQ4_XS took 2x Q4_K_M's time at 8B (804 s against 411 s)
GGUF_SLOWER |= {t: 2.7 for t in GGUF_BPW if t.startswith("IQ")}


def gguf_bits(opts: Any) -> float:
    name = (getattr(opts, "like", None) or getattr(opts, "type", None) or "Q4_K_M").upper()
    if getattr(opts, "target_bpw", None):
        return float(opts.target_bpw)
    return GGUF_BPW[name]  # every type a recipe can name has its own figure (tests/backends/test_gguf_cost.py)


def cost(opts: Any, c: Any) -> QuantizeCost:
    s = c.shape
    name = (getattr(opts, "like", None) or opts.type).upper()
    # auto's mix has i-quants and K-quants: measured on SmolLM2 1.2x (like Q4_K_M) to 1.9x (like Q2_K) a plain type
    slower = GGUF_SLOWER.get(name, 1.0) * (1.5 if opts.type == "auto" else 1.0)
    seconds = s.params * slower / c.quantize_rate()
    written = int(s.params * gguf_bits(opts) / 8)
    biggest = max(s.head, s.linear // max(s.tensors, 1)) * 4  # one float32 tensor in flight
    peak = max(c.worker_base_mb, 60 + (1.5 * biggest + written * 0.2) / MB)  # the forked worker, or llama-quantize
    return QuantizeCost(1 + seconds, peak, written, f"{s.params / 1e6:.0f} M weights")
