"""A compressed-tensors artifact whose quantization scales are not all finite is broken: llm-compressor can
leave NaN scales on an expert that no calibration token reached (vllm-project/llm-compressor PR #2826), and a
NaN scale decompresses to NaN weights that poison every token routed there. Checked after every quantize,
tensor by tensor (scales are small), so such a stage fails instead of packaging an artifact that loads."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import StageError

SCALES = ("_scale", "_zero_point", "_global_scale")


def nonfinite_scales(checkpoint: Path) -> list[str]:
    import torch
    from safetensors import safe_open

    bad = []
    for shard in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            for name in f.keys():
                if name.endswith(SCALES):
                    t = f.get_tensor(name)
                    # float8 scales (NVFP4, FP8 blocks) have no isfinite kernel: checked as float32
                    if t.is_floating_point() and not bool(torch.isfinite(t.float()).all()):
                        bad.append(name)
    return bad


def finite_scales(checkpoint: Path) -> None:
    bad = nonfinite_scales(checkpoint)
    if bad:
        raise StageError(
            f"{len(bad)} quantization scale tensors are not finite (first: {bad[0]}); an expert no calibration "
            "token reached can end so: more or more varied calibration samples, or leave the experts unquantized"
        )
