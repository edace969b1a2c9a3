"""What an llm-compressor quantize stage costs (Backend.cost of pipeline.backends.llmcompressor).

Calibrated schemes (oneshot, sequential pipeline) run every layer over the calibration tokens once to
capture its inputs and once to pass them on; AWQ adds a forward pass of the layer's Linears per grid
point; GPTQ's column-by-column update costs out x in^2 per Linear (float32, whatever the model's dtype);
W8A8 is SmoothQuant (one more pass) then GPTQ or round-to-nearest. Data-free schemes (model_free_ptq)
stream shards: bound by per-tensor work and memory. `c` is the plan's pipeline.cost.model.CostInputs."""

from __future__ import annotations

from typing import Any

from pipeline.backends import GB, MB, QuantizeCost
from pipeline.checkpoints import loading

LLMC_BASE_MB = 650  # a worker with llm-compressor, transformers and torch imported
GPTQ_COLUMN_S = 1.6e-4  # llm-compressor's per-column Python loop (see _calibrated)
SHARD_BYTES = 5 * 10**9  # what save_pretrained and the Hub's checkpoints hold per safetensors file
CALIBRATED = ("awq", "gptq", "w8a8-int8", "autoround", "llmcompressor-recipe")  # oneshot, sequential pipeline


def cost(opts: Any, c: Any) -> QuantizeCost:
    if opts.format in CALIBRATED:
        return _calibrated(opts.format, opts, c)
    return _data_free(opts.format, c)  # model_free_ptq: fp8, w8a16


def _calibrated(fmt: str, opts: Any, c: Any) -> QuantizeCost:
    s, tokens = c.shape, c.calibration_tokens
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
    bits = 8 if fmt == "w8a8-int8" else getattr(opts, "bits", 4)
    # 4-bit: half a byte a weight plus group scales (0.53 measured); 8-bit: a byte plus per-channel scales
    written = int(s.linear * (0.53 if bits == 4 else 1.0) + s.embeddings * 2)
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
