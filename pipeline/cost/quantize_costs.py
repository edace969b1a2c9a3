"""What a quantize stage costs, by format: calibrated llm-compressor schemes, data-free ones,
bitsandbytes, GGUF types and OpenVINO.

Calibrated schemes (oneshot, sequential pipeline) run every layer over the calibration tokens once to
capture its inputs and once to pass them on; AWQ adds a forward pass of the layer's Linears per grid
point; GPTQ's column-by-column update costs out x in^2 per Linear (float32, whatever the model's dtype);
W8A8 is SmoothQuant (one more pass) then GPTQ or round-to-nearest. Data-free schemes (model_free_ptq) stream shards:
bound by per-tensor work and memory. llama-quantize is bound by its own rate (measured)."""

from __future__ import annotations

from pipeline.cost.model import GB, MB, WORKER_BASE_MB, CostInputs, Estimate
from pipeline.graph.stage import Stage

LLMC_BASE_MB = 650  # a worker with llm-compressor, transformers and torch imported
GPTQ_COLUMN_S = 1.6e-4  # llm-compressor's per-column Python loop (see _calibrated)
SHARD_BYTES = 5 * 10**9  # what save_pretrained and the Hub's checkpoints hold per safetensors file
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
}
# Time per weight relative to Q4_K (search over scales with an importance matrix; Q8_0 is a plain round)
GGUF_SLOWER = {"Q2_K": 0.9, "Q3_K_S": 1.1, "Q3_K_M": 1.1, "Q3_K_L": 1.1, "Q6_K": 0.6, "Q8_0": 0.1, "Q4_0": 0.3}


def gguf_bits(opts) -> float:
    name = (getattr(opts, "like", None) or getattr(opts, "type", None) or "Q4_K_M").upper()
    if getattr(opts, "target_bpw", None):
        return float(opts.target_bpw)
    return GGUF_BPW.get(name, 5.0)


def quantize(stage: Stage, c: CostInputs) -> Estimate:
    """The format's family prices it (BY_BACKEND): a backend nobody priced raises, never borrows another's."""
    opts = c.options(stage)
    return BY_BACKEND[stage.config["backend"]](opts, c)


def _llmcompressor(opts, c: CostInputs) -> Estimate:
    fmt = opts.format
    if fmt in ("awq", "gptq", "w8a8-int8", "autoround", "llmcompressor-recipe"):  # oneshot, sequential pipeline
        return _calibrated(fmt, opts, c)
    return _data_free(fmt, c)  # model_free_ptq: fp8, w8a16


def _calibrated(fmt: str, opts, c: CostInputs) -> Estimate:
    s, tokens = c.shape, c.calibration_tokens
    # The layers only (no logits in calibration); a mixture of experts runs every expert on every calibration
    # token (llm-compressor's moe_calibrate_all_experts), not the router's top-k.
    forward = 2.0 * tokens * (s.linear if s.experts else s.active_linear)
    passes = 2.0 + (1.0 if fmt == "w8a8-int8" else 0.0)
    if fmt == "awq":
        passes += getattr(opts, "n_grid", 20) * 1.0
    seconds = 15 + c.compute_bytes() / (1.0 * GB) + passes * forward / c.torch_rate()
    gptq = fmt in ("gptq", "autoround", "llmcompressor-recipe") or getattr(opts, "rounding", "") == "gptq"
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
    if fmt == "awq":  # the layer in float32 for its grid, and per-sample buffers the size of ~11 float32 logit
        # rows per token (fitted at 64-256 tokens a sample and vocabularies of 49k-128k; not measured beyond)
        extra = max(extra, layer + 10.8 * c.calibration_seq_len * s.vocab * 4)
    # computed in float32 from a bf16 checkpoint: the mapped file's pages stay resident beside the copy
    upcast = c.bf16_bytes() if c.compute_dtype == "float32" else 0
    peak = LLMC_BASE_MB + (c.compute_bytes() + upcast + extra) / MB
    written = int(s.linear * (1.0 if fmt == "w8a8-int8" else 0.53) + s.embeddings * 2)
    return Estimate(seconds, peak, written, f"{s.layers} layers x {tokens} calibration tokens ({c.compute_dtype})")


def _data_free(fmt: str, c: CostInputs) -> Estimate:
    s = c.shape
    experts = s.layers * s.experts * 3  # many small tensors: compressed-tensors' per-tensor work shows
    # the Linear weights only: the embedding stays as it is
    seconds = 0.5 + s.linear / (45e6 * c.scale("memory_gbps")) + (0.04 if fmt == "w8a16" else 0.01) * experts
    written = int(s.linear * 1.02 + s.embeddings * 2)
    if s.experts and fmt == "w8a16":  # measured on the 8-layer Qwen3-MoE twin: 0.97x of the checkpoint
        held = 0.95 * c.bf16_bytes()
    else:  # one shard at a time
        held = 1.2 * min(c.bf16_bytes(), SHARD_BYTES)
    return Estimate(seconds, LLMC_BASE_MB + held / MB, written, f"{s.tensors} tensors, shard by shard")


def _bitsandbytes(opts, c: CostInputs) -> Estimate:
    s, fmt = c.shape, opts.format
    bits = 0.53 if fmt == "bnb-nf4" else 1.0
    seconds = 0.5 + s.params / (45e6 * c.scale("memory_gbps"))
    written = int(s.linear * bits + s.embeddings * 2)
    return Estimate(
        seconds, 900 + (written + 0.05 * c.bf16_bytes()) / MB, written, "loaded and converted tensor by tensor"
    )


def _gguf(opts, c: CostInputs) -> Estimate:
    s = c.shape
    name = (getattr(opts, "like", None) or opts.type).upper()
    slower = GGUF_SLOWER.get(name, 1.0) * (2.0 if opts.type == "auto" else 1.0)  # auto's mix has i-quants, K-quants
    seconds = s.params * slower / c.quantize_rate()
    written = int(s.params * gguf_bits(opts) / 8)
    biggest = max(s.head, s.linear // max(s.tensors, 1)) * 4  # one float32 tensor in flight
    peak = max(WORKER_BASE_MB, 60 + (1.5 * biggest + written * 0.2) / MB)  # the forked worker, or llama-quantize
    return Estimate(1 + seconds, peak, written, f"{s.params / 1e6:.0f} M weights")


def _openvino(opts, c: CostInputs) -> Estimate:
    s, fmt = c.shape, opts.format
    bits = 4.5 if fmt.endswith("int4") else 8
    seconds = 20 + s.params / (15e6 * c.scale("memory_gbps"))
    return Estimate(seconds, 1500 + 2.5 * c.bf16_bytes() / MB, int(s.params * bits / 8), "NNCF weight compression")


# Each format family's quantize cost, by backend name (pipeline.backends.Backend.name); a test checks that every
# registered backend has one.
BY_BACKEND = {
    "llmcompressor": _llmcompressor,
    "bitsandbytes": _bitsandbytes,
    "llama.cpp": _gguf,
    "openvino": _openvino,
}
