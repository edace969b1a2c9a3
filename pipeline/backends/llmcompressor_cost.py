"""What an llm-compressor quantize stage costs (Backend.cost of pipeline.backends.llmcompressor).

Calibrated schemes (oneshot, sequential pipeline) run every layer over the calibration tokens once to
capture its inputs and once to pass them on; AWQ adds a forward pass of the layer's Linears per grid
point; GPTQ's column-by-column update costs out x in^2 per Linear (float32, whatever the model's dtype);
W8A8 is SmoothQuant (one more pass) then GPTQ or round-to-nearest. Data-free schemes (model_free_ptq)
stream shards: bound by per-tensor work and memory. `c` is the plan's pipeline.cost.model.CostInputs."""

from __future__ import annotations

from typing import Any

from pipeline.backends import GB, MB, QuantizeCost
from pipeline.backends.llmcompressor_schemes import FP4, needs_data, scheme
from pipeline.checkpoints import loading

LLMC_BASE_MB = 650  # a worker with llm-compressor, transformers and torch imported
GPTQ_COLUMN_S = 1.6e-4  # llm-compressor's per-column Python loop (see _calibrated)
SHARD_BYTES = 5 * 10**9  # what save_pretrained and the Hub's checkpoints hold per safetensors file
CALIBRATED = ("awq", "gptq", "w8a8-int8", "autoround", "llmcompressor-recipe")  # oneshot, sequential pipeline


# Measured on SmolLM2-135M (106M Linear parameters), 12-07: NVFP4's packing (FP8 group scales under a global
# scale) takes 18.3 s against MXFP4's 4.3 s; an MSE-searched observer adds a grid over every weight (imatrix_mse
# on NVFP4A16: 75 s). Per Linear parameter, single runs.
NVFP4_PACK_S = 1.3e-7
OBSERVER_GRID_S = 4e-7


def cost(opts: Any, c: Any) -> QuantizeCost:
    if opts.format in CALIBRATED:
        return _calibrated(opts.format, opts, c, True)
    if opts.format in FP4 or needs_data(opts):
        return _scales_only(opts, c, needs_data(opts))
    return _data_free(opts.format, c)  # model_free_ptq: fp8, w8a16, fp8-block


def _scales_only(opts: Any, c: Any, data: bool) -> QuantizeCost:
    """oneshot with one QuantizationModifier: no search, no column updates; with data, one calibration pass
    for its observers (activation or KV-cache scales). Measured: fp8 + kv_cache 16.3 s (est. 18), nvfp4 20.4 s
    (est. 33), nvfp4a16 18.3 s (est. 18), mxfp4 4.3 s (est. 4)."""
    s = c.shape
    forward = 2.0 * c.calibration_tokens * s.active_linear / c.torch_rate() if data else 0.0
    seconds = 3 + c.compute_bytes() / (1.0 * GB) + forward
    seconds += s.linear * (NVFP4_PACK_S if opts.format.startswith("nvfp4") else 0.0)
    seconds += s.linear * (OBSERVER_GRID_S if getattr(opts, "observer", "minmax") != "minmax" else 0.0)
    return _calibrated(opts.format, opts, c, data)._replace(seconds=seconds)  # its memory and bytes written


def _calibrated(fmt: str, opts: Any, c: Any, data: bool) -> QuantizeCost:
    s, tokens = c.shape, c.calibration_tokens if data else 0
    # The layers only (no logits in calibration); a mixture of experts runs every expert on every calibration
    # token (llm-compressor's moe_calibrate_all_experts), not the router's top-k.
    forward = 2.0 * tokens * (s.linear if s.experts else s.active_linear)
    passes = 2.0 + (1.0 if fmt == "w8a8-int8" else 0.0)
    if fmt == "awq":
        passes += getattr(opts, "n_grid", 20) * 1.0
    seconds = 15 + c.compute_bytes() / (1.0 * GB) + passes * forward / c.torch_rate()
    rounding = getattr(opts, "rounding", "")
    if fmt == "autoround" or rounding == "autoround":
        # AutoRound tunes each decoder layer for `iters` steps, a forward and a backward pass (about 3 forward
        # passes' work) over one batch of samples each. From its FLOPs; not yet fitted to a measured run.
        batch = min(getattr(opts, "batch_size", 8), max(1, tokens // max(c.calibration_seq_len, 1)))
        work = 3 * 2.0 * batch * c.calibration_seq_len * (s.linear if s.experts else s.active_linear)
        seconds += opts.iters * work / c.torch_rate()
    gptq = fmt in ("gptq", "llmcompressor-recipe") or rounding == "gptq"
    if gptq:
        # measured: about 11 % of the float32 GEMM peak (block updates of 128 columns, a Cholesky per Linear),
        # and llm-compressor's loop over each column in Python (fake-quantize, error, update: ~10 torch calls),
        # ~160 us a column whatever its height: llm-compressor's own per-Linear times on the 8-layer
        # Qwen3-30B-A3B twin fit 1.6e-4 x in + out x in^2 / 17.9e9 s (k_proj 0.45 s, q_proj 1.39 s,
        # o_proj 2.57 s, experts' gate/up 0.51 s), so 3,000 narrow expert Linears cost more in the loop
        # than in the arithmetic. A Python-bound constant: the micro-benchmark does not scale it.
        seconds += s.column_work / (0.11 * c.speed.gemm_f32_gflops * 1e9) + s.columns * GPTQ_COLUMN_S
    layer = s.linear / max(s.layers, 1) * 4  # one decoder layer's weights in float32
    extra = s.hessian_bytes if gptq else 0.0  # one float32 Hessian (in x in) per Linear of the layer
    if fmt == "awq":  # the layer in float32 for its grid, and per-sample buffers the size of ~2 float32 logit
        # rows per token. The same demo stage peaks at 1225 MB on one 2-core EPYC and 1733 MB on another: 2
        # rows puts the estimate (1578 MB) within 1.3x of both; twins at 64-256 tokens a sample, 49k-152k
        # vocabularies stay within 1.1-1.2x (their layer term dominates)
        extra = max(extra, layer + 2.0 * c.calibration_seq_len * s.vocab * 4)
    # computed in float32 from a bf16 checkpoint: the mapped file's pages stay resident beside the copy
    upcast = c.bf16_bytes() if c.compute_dtype == "float32" else 0
    peak = LLMC_BASE_MB + (c.compute_bytes() + upcast + extra) / MB
    bits = 4 if fmt == "llmcompressor-recipe" else scheme(opts)["weights"]["num_bits"]
    # 4-bit: half a byte a weight plus group scales (0.53 measured); 8-bit: a byte plus per-channel scales
    written = int(s.linear * (0.53 if bits == 4 else 1.0) + s.embeddings * 2)
    if getattr(opts, "type", "") == "auto":  # its budget: a share more than the 4 bits, or a size
        written = ct_auto_bytes(opts, written)
    # Weights over the CPU budget are offloaded to a folder beside the output (llmcompressor_run._loaded).
    offloaded = max(0, c.compute_bytes() - loading.cpu_budget_bytes())
    basis = f"{s.layers} layers x {tokens} calibration tokens ({c.compute_dtype})"
    return QuantizeCost(seconds, peak, written, basis, scratch_bytes=offloaded)


def _data_free(fmt: str, c: Any) -> QuantizeCost:
    s = c.shape
    experts = s.layers * s.experts * 3  # many small tensors: compressed-tensors' per-tensor work shows
    # the Linear weights only: the embedding stays as it is
    seconds = 0.5 + s.linear / (45e6 * c.scale("memory_gbps")) + (0.04 if fmt == "w8a16" else 0.01) * experts
    written = int(s.linear * 1.02 + s.embeddings * 2)
    if s.experts and fmt == "w8a16":  # measured on the 8-layer Qwen3-MoE twin: 0.97x of the checkpoint
        held = 0.95 * c.bf16_bytes()
    else:  # one shard at a time
        held = 1.2 * min(c.bf16_bytes(), SHARD_BYTES)
    return QuantizeCost(seconds, LLMC_BASE_MB + held / MB, written, f"{s.tensors} tensors, shard by shard")


def ct_auto_bytes(opts: Any, uniform: int) -> int:
    """What a compressed-tensors `type: auto` artifact writes: its target size, or `like`'s bytes plus the extra."""
    if opts.target_size:
        return loading.parse_size(opts.target_size)
    like = uniform if opts.like == "w4a16" else int(uniform * 1.9)  # W8A16 per channel: about twice the bytes
    return int(like * (1 + opts.extra_pct / 100))
