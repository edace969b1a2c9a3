"""compressed-tensors sensitivity stage: what each weight scheme would cost each group of Linears, for `auto`.

Measured once per run on the source model and the calibration set, shared by every auto format with the same
candidate schemes; compressed-tensors does every quantization (its min/max qparams and fake_quantize), we only
measure and choose (backends/ct_auto.py). The method is the GGUF one (backends/gguf_sensitivity.py):
1. importance: one pass over calibration windows with a hook on every decoder Linear: E[x²] per input channel.
2. error: each candidate's round-to-nearest weights; a Linear's error is sum_j E[x_j²] sum_i dW_ij², the expected
   squared error of its output. A group (the Linears vLLM fuses: q/k/v, gate/up) sums its members: it gets one
   scheme, since vLLM refuses a fused layer whose parts are stored differently.
3. scale: one probe per kind (qkv, o, gate_up, down): that kind at PROBE, the rest unquantized, scored by KLD to the
   unquantized model on calibration windows; KLD / the kind's summed error turns a group's error into expected
   KLD. A probe of every kind at once checks that the costs add up (`additivity`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.backends.llmcompressor_schemes import weight_args
from pipeline.data import samples as calibration_samples
from pipeline.stage_id import CALIBRATION, SOURCE

VERSION = 2  # 2: additivity as GGUF's (predicted, measured)
FILE = "sensitivity.json"
PROBE_WINDOWS = 4  # calibration samples scored per probe
FUSED = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}
_LINEAR = re.compile(r"^(?P<prefix>.*\.layers\.\d+)\.(?P<block>self_attn|mlp)\.(?P<name>[a-z_]+)$")


def output(stage_dir: Path) -> dict[str, Any]:
    return json.loads((stage_dir / FILE).read_text())


def candidates(group_size: int | None, symmetric: bool) -> dict[str, dict[str, Any] | None]:
    """Scheme name -> compressed-tensors weight args (None: left bf16). The 4-bit one is the format's own."""
    return {
        "w4a16": weight_args(4, "int", group_size, symmetric),
        "w8a16": weight_args(8, "int", None, True),
        "bf16": None,
    }


def group_of(module: str) -> tuple[str, str] | None:
    """(group, kind) of a decoder Linear: `model.layers.3.qkv` and `qkv`; None for anything else."""
    m = _LINEAR.match(module)
    if not m:
        return None
    kind = FUSED.get(m["name"], m["name"].removesuffix("_proj"))
    return f"{m['prefix']}.{kind}", kind


def stored_bytes(shape: tuple[int, int], weights: dict[str, Any] | None) -> int:
    """Bytes compressed-tensors writes for one Linear: packed integers, a bf16 scale per group or row, and for
    asymmetric schemes a packed zero point beside each scale."""
    rows, cols = shape
    if weights is None:
        return 2 * rows * cols
    scales = rows * (cols // weights["group_size"] if weights.get("group_size") else 1)
    zero_points = 0 if weights["symmetric"] else scales * weights["num_bits"] // 8
    return rows * cols * weights["num_bits"] // 8 + 2 * scales + zero_points


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    return measure(inputs[SOURCE], inputs[CALIBRATION], config["candidates"], config["probe"], out, ctx)


def measure(
    source: Path, calibration: Path, schemes: dict[str, Any], probe: str, out: Path, ctx: Any
) -> dict[str, Any]:
    import torch

    from pipeline.checkpoints import loading

    ctx.status("loading model")
    model = loading.from_pretrained_pread(source, dtype=loading.compute_dtype(source), device_map=None).eval()
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and group_of(n)}
    windows = [s["input_ids"] for s in calibration_samples.load(calibration)[:PROBE_WINDOWS]]
    importance = _importance(model, linears, windows, ctx)
    tensors: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, float]] = {}
    torch.set_grad_enabled(False)  # a worker process of its own: nothing here trains
    for i, (name, lin) in enumerate(linears.items(), 1):
        ctx.status(f"scheme errors: Linear {i}/{len(linears)}")
        group, kind = group_of(name)
        t = tensors.setdefault(group, {"kind": kind, "members": [], "bytes": 0, "elements": 0, "types": {}})
        t["members"].append(name)
        t["bytes"] += stored_bytes(tuple(lin.weight.shape), None)
        t["elements"] += lin.weight.numel()
        for scheme, args in schemes.items():
            c = t["types"].setdefault(scheme, {"bytes": 0, "error": 0.0})
            c["bytes"] += stored_bytes(tuple(lin.weight.shape), args)
            if args is not None:
                err = float(((_rtn(lin.weight, args) - lin.weight.float()) ** 2).sum(0) @ importance[name])
                c["error"] += err
                errors.setdefault(kind, {}).setdefault(scheme, 0.0)
                errors[kind][scheme] += err
    base = _logprobs(model, windows)
    kinds = sorted(errors)
    probes = {k: _probe(model, linears, [k], schemes[probe], windows, base, ctx) for k in kinds}
    together = _probe(model, linears, kinds, schemes[probe], windows, base, ctx)
    scale = {k: probes[k] / max(errors[k][probe], 1e-30) for k in kinds}
    for t in tensors.values():
        for c in t["types"].values():
            c["kld"] = scale[t["kind"]] * c.pop("error")
    weights = 2 * sum(p.numel() for p in model.parameters())  # stored bf16; a tied embedding counted once
    result = {
        "weights_bytes": weights,
        "tensors": tensors,
        "probe": probe,
        "probes": probes,
        "additivity": {"predicted": sum(probes.values()), "measured": together},
    }
    (out / FILE).write_text(json.dumps(result, indent=1))
    return {"groups": len(tensors), "probes": probes, "additivity": result["additivity"]}


def _rtn(weight: Any, args: dict[str, Any]) -> Any:
    """Round-to-nearest with min/max scales, by compressed-tensors (the quantizer llm-compressor's observers feed)."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    qa = QuantizationArgs.model_validate(args)
    w = weight.float()
    blocks = w.reshape(w.shape[0], -1, qa.group_size) if qa.group_size else w.unsqueeze(1)
    scale, zero = calculate_qparams(blocks.amin(-1), blocks.amax(-1), qa)
    return fake_quantize(w, scale, zero, qa)


def _importance(model: Any, linears: dict[str, Any], windows: list[list[int]], ctx: Any) -> dict[str, Any]:
    import torch

    sums = {n: torch.zeros(m.in_features) for n, m in linears.items()}
    count = [0]

    def hook(name: str) -> Any:
        def record(_module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] += (x * x).sum(0)
            if name == next(iter(linears)):
                count[0] += x.shape[0]

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in linears.items()]
    try:
        ctx.status(f"importance: E[x²] per input channel over {len(windows)} calibration samples")
        _logprobs(model, windows)
    finally:
        for h in handles:
            h.remove()
    return {n: s / max(count[0], 1) for n, s in sums.items()}


def _logprobs(model: Any, windows: list[list[int]]) -> list[Any]:
    import torch

    with torch.no_grad():
        return [torch.log_softmax(model(torch.tensor([w])).logits[0].float(), -1) for w in windows]


def _probe(
    model: Any, linears: dict[str, Any], kinds: list[str], args: dict[str, Any], windows: list, base: list, ctx: Any
) -> float:
    """KLD(base || model with these kinds' Linears at `args`) per token, the weights restored after."""
    ctx.status(f"probe: {'+'.join(kinds)} quantized")
    saved = {}
    for name, lin in linears.items():
        if group_of(name)[1] in kinds:
            saved[name] = lin.weight.data
            lin.weight.data = _rtn(lin.weight, args).to(lin.weight.dtype)
    try:
        quantized = _logprobs(model, windows)
    finally:
        for name, w in saved.items():
            linears[name].weight.data = w
    total = sum(float((b.exp() * (b - q)).sum()) for b, q in zip(base, quantized, strict=True))
    return total / sum(len(w) for w in windows)
