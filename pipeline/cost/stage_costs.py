"""One cost function per stage kind: (stage, inputs) -> Estimate.

Each is startup + the work the stage does over the rate of the resource it is bound by (see
pipeline.cost.model). Peak RSS is the worker's library baseline plus what the stage holds at once:
the whole model in the engines that load it, a shard or a tensor in the ones that stream. The constants
are fitted on the reference machine's measured runs (pipeline/docs/estimates.md, "Estimated and measured");
quantize stages are priced by their format's family (pipeline.cost.quantize_costs)."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.backends import FORMATS
from pipeline.backends.gguf_cost import gguf_bits
from pipeline.cost.model import GB, MB, WORKER_BASE_MB, CostInputs, Estimate
from pipeline.cost.quantize_costs import quantize
from pipeline.engines import ENGINES
from pipeline.graph.stage import Stage
from pipeline.tools.environments import accelerator

TORCH_BASE_MB = 700
# a stage that only writes down its engine's refusal: the worker's baseline before torch pages in (measured 451 MB)
REFUSED_MB = 480
RUNNER_MB = 100  # the runner process: rich, pydantic, numpy, jinja2 (measured 76-84 MB in a package stage)
SENSITIVITY_PASSES, PROBE_TOKENS = 11, 2048
TASKS_S = 5  # lm-eval's harness start and a small task (the demo's `capitals`)
COMPRESSED_TENSORS = {f for f, info in FORMATS.items() if info.backend.kind == "compressed-tensors"}


def source(stage: Stage, c: CostInputs) -> Estimate:
    if c.source_kind == "gguf":  # dequantized tensor by tensor into the recipe's dtype, tokenizer rebuilt
        n = c.shape.params
        return Estimate(4 + n / (6e6 * c.scale("memory_gbps")), TORCH_BASE_MB + c.bf16_bytes() / MB * 0.6, 2 * n)
    # a local checkpoint is hard-linked or copied (its hashes were taken by the plan: they are in the key)
    seconds = 4.5 + c.source_written / (0.5 * GB * c.scale("disk_write_gbps"))
    return Estimate(seconds, 380, c.source_written)


def calibration(stage: Stage, c: CostInputs) -> Estimate:
    """Reading, rendering and tokenizing the dataset: its size, not the model's, sets time and memory
    (a small local file; a package's or the Hub's whole dataset, ShareGPT's 670 MB of JSON)."""
    return _text(stage, c.calibration_tokens)


def eval_corpus(stage: Stage, c: CostInputs) -> Estimate:
    return _text(stage, c.eval_tokens)


def _text(stage: Stage, tokens: int) -> Estimate:
    small = (stage.config.get("source") or {}).get("kind") in ("local", "self")
    return Estimate((1 if small else 3) + tokens / 20e3, 460 if small else 1300, tokens * 12, f"{tokens} tokens")


def gguf_convert(stage: Stage, c: CostInputs) -> Estimate:
    """llama.cpp's converter: reads every tensor, writes F16 (memory- and disk-bound)."""
    n = 2 * c.shape.params
    rate = 160 * MB * min(c.scale("memory_gbps"), c.scale("disk_write_gbps"))
    mapped = min(n, 3 * GB)  # the shard being read is mapped; measured 3.1-3.6 GB at 11-16 GB of weights
    return Estimate(7 + n / rate, 500 + mapped / MB, n, f"{n / GB:.2f} GB of F16")


def imatrix(stage: Stage, c: CostInputs) -> Estimate:
    """llama-imatrix: one F16 forward pass over the calibration tokens (the file is mapped: all of it resident)."""
    flops = c.shape.forward_flops(c.calibration_tokens)
    # the mapped F16 file and the logits of a batch of up to 2048 tokens
    tool = 130 + 2 * c.shape.params / MB + min(c.calibration_tokens, 2048) * c.shape.vocab * 4 / MB
    return Estimate(2 + flops / c.llama_rate(), max(WORKER_BASE_MB, tool), 4 * c.shape.linear // 1000)


def sensitivity(stage: Stage, c: CostInputs) -> Estimate:
    """Eleven quantizations of a row sample (tensors over 1 M weights cut to about 1 M; the ladder's
    i-quants make a pass ~2.7x slower than Q4_K) and one llama-perplexity probe per tensor kind (about 9),
    per layer band (up to 10) and one of everything, each over a quantized copy of the F16 file and the
    calibration text (at most 4 windows of 512 tokens). Fitted on a 4-layer 8B-width twin with 4 M row
    samples: 341 s measured, 317 s estimated (the prior said 582 s); the 32-layer twin with 1 M samples:
    1985 s measured, 1445 s estimated (its probes' F16 copies write slower than the disk benchmark says)."""
    s = c.shape
    sampled = s.gguf_sampled
    ladder = SENSITIVITY_PASSES * sampled * 2.7 / c.quantize_rate()
    probes = 9 + min(10, s.layers) + 1
    tokens = min(c.calibration_tokens, PROBE_TOKENS)
    per_probe = 3 + 2 * s.params / (1.5 * GB * c.scale("disk_write_gbps")) + s.forward_flops(tokens) / c.llama_rate()
    tool = 250 + 2 * s.params / MB + _probe_logits_mb(c)  # llama-perplexity: the F16 copy and its logits
    return Estimate(
        5 + ladder + probes * per_probe,
        max(WORKER_BASE_MB, tool),
        int(sampled * 2),
        f"{SENSITIVITY_PASSES} passes over {sampled / 1e6:.0f} M sampled weights, {probes} probes",
        # each probe is a copy of the whole model, F16 but for the probed tensors, beside the row sample
        scratch_bytes=int(2 * s.params + 2 * sampled),
    )


def ct_sensitivity(stage: Stage, c: CostInputs) -> Estimate:
    """compressed-tensors' sensitivity (backends/ct_sensitivity.py) in transformers: the model loaded, seven
    forward passes over its probe windows (importance, the unquantized log-probs, four kinds and all at once),
    and round-to-nearest of every Linear in float32 per candidate and probe (about 4 passes, some 40 memory-bound
    elementwise ops a weight). Both sets of log-probs are held in float32."""
    windows = stage.config.get("windows", 4)
    tokens = min(c.calibration_tokens, windows * c.calibration_seq_len)
    load = 3 + c.compute_bytes() / (1.5 * GB * c.scale("memory_gbps"))
    forwards = 7 * c.shape.forward_flops(tokens) / c.torch_rate()
    rtn = 4 * c.shape.linear * 160 / (c.speed.memory_gbps * GB)
    logprobs = 2 * tokens * c.shape.vocab * 4 / MB
    widest = c.shape.linear / max(c.shape.layers, 1) / 3  # about one MLP projection: its float32 copies
    peak = TORCH_BASE_MB + 1.05 * c.compute_bytes() / MB + logprobs + 3 * widest * 4 / MB
    return Estimate(5 + load + forwards + rtn, peak, 200_000, f"7 passes over {tokens} tokens, 4 RTN passes")


def reference(stage: Stage, c: CostInputs) -> Estimate:
    """The base model in transformers: load, log-probs over the evaluation windows, a speed run."""
    seconds = 3 + c.compute_bytes() / (1.5 * GB * c.scale("memory_gbps")) + _eval_forward(c)
    seconds += _speed_run(c, c.compute_bytes()) + (TASKS_S if c.tasks else 0)
    return Estimate(
        seconds, TORCH_BASE_MB + 1.05 * c.compute_bytes() / MB + _logits_mb(c), 0, f"{c.eval_tokens} tokens"
    )


def evaluate(stage: Stage, c: CostInputs) -> Estimate:
    engine = stage.config.get("engine", "transformers")
    opts = c.options(stage)
    fmt = getattr(opts, "format", "")
    worker = 1300 if c.tasks else 800  # lm-eval's harness and its task files in the worker
    tasks = TASKS_S if c.tasks else 0
    if engine == "llama.cpp":
        bits = 16 if stage.kind == "floor" else gguf_bits(opts)
        held = c.shape.params * bits / 8
        forward = c.shape.forward_flops(c.eval_tokens) / c.llama_rate()
        bench = 10 + _speed_run(c, held, c.llama_rate()) if c.speed_run[2] else 0  # llama-bench's own repeats
        seconds = 1 + held / (1.5 * GB) + forward + bench + tasks
        # llama-perplexity: the model, a 512-token batch's logits and every scored token's (for the KLD)
        batch = min(2048, c.eval_context) * c.shape.vocab * 4 / MB
        tool = 450 + held / MB + batch + _probe_logits_mb(c, c.eval_tokens)
        return Estimate(seconds, max(worker, tool), 0, f"{c.eval_tokens} tokens in llama.cpp")
    if engine in ("vllm", "openvino"):
        refusal = _refusal(engine, fmt, opts, c) if stage.kind == "evaluate-engine" else None
        if refusal:  # the serve check's refusal is written down: no engine starts
            return Estimate(1, REFUSED_MB, 0, refusal)
        return Estimate(60 + _eval_forward(c), 900, 0, f"{c.eval_tokens} tokens in {engine}")
    held, share = c.compute_bytes(), 1.2
    if fmt == "bnb-nf4":  # NF4 Linears (half a byte a weight), the embeddings as stored
        held, share = int(c.shape.linear * 0.5 + c.shape.embeddings * 2), 0.8
    # compressed-tensors decompresses every Linear on load (packed INT4 is the slowest to unpack)
    unpack = 0.2 if fmt in ("awq", "gptq") else 0.6
    decompress = 0 if fmt in ("bnb-nf4", "") else c.compute_bytes() / (unpack * GB * c.scale("memory_gbps"))
    seconds = 2.5 + decompress + c.compute_bytes() / (1.5 * GB) + _eval_forward(c) + _speed_run(c, held) + tasks
    peak = TORCH_BASE_MB + share * held / MB + _logits_mb(c)
    # a compressed mixture-of-experts artifact is loaded from a dense copy written beside the stage's output
    # (pipeline.checkpoints.decompressed): the model at its compute dtype, deleted once loaded
    dense = c.compute_bytes() if c.shape.experts and stage.kind != "floor" and fmt in COMPRESSED_TENSORS else 0
    return Estimate(seconds, peak, 0, f"{c.eval_tokens} tokens in transformers", scratch_bytes=dense)


def _refusal(engine: str, fmt: str, opts: object, c: CostInputs) -> str | None:
    if accelerator() != "cpu" or fmt not in FORMATS:
        return None
    return ENGINES[engine].refuses(FORMATS[fmt].backend.scheme(opts), c.speed.flags)


def serve_check(stage: Stage, c: CostInputs) -> Estimate:
    """Start vLLM on the artifact and ask it one question (its start-up dominates)."""
    return Estimate(40 + c.bf16_bytes() / (0.5 * GB), 700, 0, "one vLLM start")


def package(stage: Stage, c: CostInputs) -> Estimate:
    """Card, serving configs, sha256 of every file (weights are hard links: no bytes written), in the
    runner's own process, whose peak this is: the runner's imports (~75 MB) and the stage's small data
    (GGUF headers are walked without building the vocabulary: pipeline.checkpoints.gguf_header)."""
    return Estimate(0.3 + c.bf16_bytes() / (4 * GB), RUNNER_MB, 200_000)


def openvino_export(stage: Stage, c: CostInputs) -> Estimate:
    """optimum-intel's export in its own environment: traces the model (transformers loads it whole)."""
    n = c.bf16_bytes()
    return Estimate(20 + c.shape.params / (15e6 * c.scale("memory_gbps")), 1500 + 2.5 * n / MB, n, "one export")


def publish(stage: Stage, c: CostInputs) -> Estimate:
    return Estimate(5, 200, 0, "upload time not counted (network)")


COSTS: dict[str, Callable[[Stage, CostInputs], Estimate]] = {
    "source": source,
    "calibration": calibration,
    "eval-corpus": eval_corpus,
    "gguf-convert": gguf_convert,
    "imatrix": imatrix,
    "gguf-sensitivity": sensitivity,
    "ct-sensitivity": ct_sensitivity,
    "openvino-export": openvino_export,
    "quantize": quantize,
    "reference": reference,
    "floor": evaluate,
    "evaluate": evaluate,
    "evaluate-engine": evaluate,
    "serve-check": serve_check,
    "package": package,
    "publish": publish,
}


def _probe_logits_mb(c: CostInputs, tokens: int = PROBE_TOKENS) -> float:
    """llama-perplexity's logits over its windows (float32), with its KL-divergence buffers."""
    return tokens * c.shape.vocab * 4 * 1.5 / MB


def _eval_forward(c: CostInputs) -> float:
    return c.shape.forward_flops(c.eval_tokens) / c.torch_rate()


def _speed_run(c: CostInputs, held: float, rate: float | None = None) -> float:
    """The speed measurement: prompt then decoded tokens, warm-up and repeats, until its time budget runs
    out (evaluation.speed); decoding reads every weight once per token, at about 40 % of the bandwidth."""
    prompt, decoded, runs, budget = c.speed_run
    if not runs:
        return 0.0
    once = c.shape.forward_flops(prompt) / (rate or c.torch_rate()) + decoded * held / (0.4 * GB * c.speed.memory_gbps)
    return min(runs * once, budget + once)


def _logits_mb(c: CostInputs) -> float:
    """A 512-token window's float32 logits, their log-softmax and a copy."""
    return 512 * c.shape.vocab * 4 * 3 / MB
