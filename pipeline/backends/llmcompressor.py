"""llm-compressor formats: compressed-tensors checkpoints that vLLM serves and transformers loads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt

from pipeline.backends import Backend, FormatOptions, register

log = logging.getLogger(__name__)


class _LcOptions(FormatOptions):
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"], description="modules left unquantized")


class Fp8Options(_LcOptions):
    """FP8 weights (per channel) and FP8 activations quantized per token at run time: no calibration."""

    format: Literal["fp8"]
    scheme: Literal["dynamic"] = "dynamic"


class W8A16Options(_LcOptions):
    """INT8 weights, 16-bit activations; round-to-nearest, data-free."""

    format: Literal["w8a16"]
    group_size: PositiveInt | None = Field(None, description="None = one scale per output channel")
    symmetric: bool = True


def _weights(num_bits: int, typ: str, group_size: int | None, symmetric: bool = True) -> dict[str, Any]:
    if group_size:
        return {"num_bits": num_bits, "type": typ, "symmetric": symmetric, "strategy": "group", "group_size": group_size}
    return {"num_bits": num_bits, "type": typ, "symmetric": symmetric, "strategy": "channel"}


def grouped_layers(model_config: dict[str, Any]) -> dict[str, int]:
    """Input widths of the Linear layers of a decoder block, from config.json (no weights needed)."""
    hidden = model_config.get("hidden_size")
    inter = model_config.get("intermediate_size")
    if not hidden:
        return {}
    widths = {"q_proj/k_proj/v_proj/gate_proj/up_proj": hidden, "o_proj": hidden}
    if inter:
        widths["down_proj"] = inter
    return widths


def _route_loguru() -> None:
    """llmcompressor logs through loguru to the terminal; send it to the stage's log file instead."""
    from loguru import logger

    logger.remove()
    logger.add(lambda message: log.info(message.record["message"]), level="INFO", format="{message}")


@register
class LlmCompressorBackend(Backend):
    name = "llmcompressor"
    formats = {"fp8": Fp8Options, "w8a16": W8A16Options}
    modules = ("llmcompressor", "compressed_tensors")
    packages = ("llmcompressor", "compressed-tensors", "transformers", "torch")
    extra = "llmcompressor"

    def describe(self, opts: FormatOptions) -> str:
        if isinstance(opts, Fp8Options):
            return "FP8 W8A8 dynamic (compressed-tensors)"
        assert isinstance(opts, W8A16Options)
        g = f"group {opts.group_size}" if opts.group_size else "per-channel"
        return f"INT8 W8A16 RTN {g} (compressed-tensors)"

    def problems(self, opts: FormatOptions, model_config: dict[str, Any] | None) -> list[tuple[str, str]]:
        group = getattr(opts, "group_size", None)
        if not group or not model_config:
            return []
        widths = grouped_layers(model_config)
        bad = {name: w for name, w in widths.items() if w % group}
        if not bad:
            return []
        fits = [g for g in (32, 64, 128, 256) if all(w % g == 0 for w in widths.values())]
        layers = ", ".join(f"{n} (in {w})" for n, w in bad.items())
        hint = f"group sizes that divide every layer: {fits}" if fits else "no power-of-two group size fits; use per-channel (group_size: null)"
        return [("group_size", f"{group} does not divide the input width of {layers}; {hint}")]

    def scheme(self, opts: FormatOptions) -> dict[str, Any]:
        """The compressed-tensors config group this format maps onto."""
        if isinstance(opts, Fp8Options):
            return {
                "targets": ["Linear"],
                "weights": _weights(8, "float", None),
                "input_activations": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token", "dynamic": True},
            }
        assert isinstance(opts, W8A16Options)
        return {"targets": ["Linear"], "weights": _weights(8, "int", opts.group_size, opts.symmetric)}

    def quantize(self, opts: FormatOptions, source: Path, out: Path, ctx: Any) -> dict[str, Any]:
        import torch
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _route_loguru()
        ctx.status("loading model")
        # fp32 for the math: bf16 matmuls are 5-17x slower on CPUs without native bf16.
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, trust_remote_code=ctx.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=ctx.trust_remote_code)
        modifier = QuantizationModifier(targets=["Linear"], ignore=list(opts.ignore), config_groups={"group_0": self.scheme(opts)})
        ctx.status("quantizing (llmcompressor oneshot)")
        oneshot(model=model, recipe=[modifier])
        ctx.status("saving compressed-tensors checkpoint")
        model.to(torch.bfloat16)
        model.save_pretrained(out, save_compressed=True)
        tokenizer.save_pretrained(out)
        return {"scheme": self.scheme(opts), "ignore": list(opts.ignore)}
