"""A compressed-tensors checkpoint of a mixture-of-experts model written back as dense weights.

Why: transformers 5.17 loads compressed-tensors MoE checkpoints through its expert-fusing conversion,
which fails or goes wrong for several schemes (measured on a Qwen3-MoE twin: asymmetric INT4 misses its
zero points, INT8 `int-quantized` experts are not found, a quantized router is re-initialised at
random). compressed-tensors' own decompressor for the checkpoint's format turns each quantized
module's tensors back into a dense `weight` (the numbers a compressed load computes with); the dense
checkpoint then loads through transformers' ordinary path. What this cannot keep: activation
quantization (W8A8, FP8) — transformers' fused experts never emulated it anyway — so an evaluation of
such a load measures the weights' quantization only, and says so (`CAVEAT`, in the metrics)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.checkpoints import moe
from pipeline.errors import StageError

QUANT_SUFFIXES = (
    "weight_packed",
    "weight_scale",
    "weight_zero_point",
    "weight_shape",
    "weight_g_idx",
    "weight_global_scale",
    "input_scale",
    "input_zero_point",
    "input_global_scale",
    "output_scale",
)
CAVEAT = "weights only: a mixture-of-experts artifact, evaluated dense-decompressed (no activation quantization)"


def needs_dense_load(checkpoint: Path) -> bool:
    """A compressed-tensors checkpoint of an MoE model."""
    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError):
        return False
    method = (config.get("quantization_config") or {}).get("quant_method")
    return method == "compressed-tensors" and moe.is_moe(config)


def fp4(checkpoint: Path) -> bool:
    """A compressed-tensors checkpoint with FP4 weights (NVFP4, MXFP4): compressed-tensors 0.19 unpacks them
    to bfloat16 only, whatever dtype the model is loaded in (a float32 load fails in its first matmul)."""
    try:
        qc = json.loads((checkpoint / "config.json").read_text()).get("quantization_config") or {}
    except (OSError, ValueError):
        return False
    weights = [(g.get("weights") or {}) for g in (qc.get("config_groups") or {}).values()]
    return qc.get("quant_method") == "compressed-tensors" and any(
        w.get("num_bits") == 4 and w.get("type") == "float" for w in weights
    )


def write_dense(checkpoint: Path, out: Path, dtype: Any) -> Path:
    """Write `checkpoint`'s weights dense in `dtype` into `out` (config without quantization_config,
    every other file copied); one shard at a time."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme
    from safetensors import safe_open
    from safetensors.torch import save_file

    config = json.loads((checkpoint / "config.json").read_text())
    qc = config.pop("quantization_config")
    groups = [
        (QuantizationScheme.model_validate(g), BaseCompressor.get_value_from_registry(g.get("format") or qc["format"]))
        for g in (qc.get("config_groups") or {}).values()
    ]
    if not groups:
        raise StageError(f"{checkpoint.name}: a compressed-tensors config without quantization groups")
    out.mkdir(parents=True, exist_ok=True)
    for f in checkpoint.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "config.json":
            shutil.copy2(f, out / f.name)
    config["torch_dtype"] = config["dtype"] = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    index: dict[str, str] = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        modules: dict[str, dict[str, Any]] = {}
        dense: dict[str, Any] = {}
        for name, t in tensors.items():
            prefix, _, local = name.rpartition(".")
            if local in QUANT_SUFFIXES:
                modules.setdefault(prefix, {})[local] = t
            else:
                dense[name] = t
        for prefix, state in modules.items():
            if "weight_scale" not in state:
                continue  # activation parameters only: a dense load has no use for them
            if f"{prefix}.weight" in dense:  # int/float-quantized formats keep the quantized values in `weight`
                state["weight"] = dense.pop(f"{prefix}.weight")
            scheme, compressor = _group_of(prefix, groups, checkpoint)
            dense[f"{prefix}.weight"] = compressor.decompress(state, scheme)["weight"]
        dense = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in dense.items()}
        save_file(dense, str(out / shard.name), metadata={"format": "pt"})
        index.update({k: shard.name for k in dense})
    if (checkpoint / "model.safetensors.index.json").is_file():
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    return out


def _group_of(module: str, groups: list[tuple[Any, Any]], checkpoint: Path) -> tuple[Any, Any]:
    """The group that quantized `module`, by compressed-tensors' precedence: a target naming the module
    exactly, then a regex target, then a class target ("Linear": every quantized module here is one)."""
    import re

    def rank(target: str) -> int | None:
        if target == module:
            return 0
        if target.startswith("re:"):
            return 1 if re.match(target[3:], module) else None
        return 2 if "." not in target else None

    ranked = [(r, i) for i, (scheme, _) in enumerate(groups) for t in scheme.targets if (r := rank(t)) is not None]
    if not ranked:
        raise StageError(f"{checkpoint.name}: no quantization group targets {module}")
    return groups[min(ranked)[1]]
