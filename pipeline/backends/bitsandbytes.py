"""bitsandbytes formats through transformers' BitsAndBytesConfig, saved pre-quantized (vLLM and
TGI load such checkpoints on GPU; transformers loads them on CPU too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.backends import GB, MB, Backend, FormatOptions, QuantizeCost, register
from pipeline.checkpoints import moe
from pipeline.checkpoints.loading import from_pretrained_pread
from pipeline.errors import RecipeError

DTYPES = Literal["bfloat16", "float16", "float32"]


class _BnbOptions(FormatOptions):
    skip_modules: list[str] = Field(default_factory=lambda: ["lm_head"], description="modules kept in 16-bit")


class Nf4Options(_BnbOptions):
    """4-bit NormalFloat weights (QLoRA's format), optionally with double-quantized scales."""

    format: Literal["bnb-nf4"]
    double_quant: bool = True
    compute_dtype: DTYPES = "bfloat16"


class Int8Options(_BnbOptions):
    """LLM.int8(): 8-bit weights with 16-bit outlier columns above `threshold`."""

    format: Literal["bnb-int8"]
    threshold: float = Field(6.0, gt=0)


def config(opts: FormatOptions) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    if isinstance(opts, Nf4Options):
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=opts.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, opts.compute_dtype),
            llm_int8_skip_modules=list(opts.skip_modules),
        )
    assert isinstance(opts, Int8Options)
    return BitsAndBytesConfig(
        load_in_8bit=True, llm_int8_threshold=opts.threshold, llm_int8_skip_modules=list(opts.skip_modules)
    )


@register
class BitsAndBytesBackend(Backend):
    name = "bitsandbytes"
    formats = {"bnb-nf4": Nf4Options, "bnb-int8": Int8Options}
    modules = ("bitsandbytes",)
    packages = ("bitsandbytes", "transformers", "torch")
    extra = "bnb"

    def problems(self, opts: FormatOptions, model_config: dict[str, Any] | None) -> list[tuple[str, str]]:
        # transformers' bitsandbytes integration replaces nn.Linear layers; its MoE models keep experts as
        # fused 3-D parameters, which it leaves in bf16: the artifact would be quantized only in name.
        if not model_config or not moe.is_moe(model_config):
            return []
        share = moe.expert_params(model_config) / moe.total_params(model_config)
        return [
            (
                "format",
                f"bitsandbytes quantizes nn.Linear layers only, and this mixture-of-experts model's experts "
                f"are fused parameters in transformers: {share:.0%} of its weights would stay bfloat16. Use "
                "awq, gptq, w8a16, fp8 or gguf for mixture-of-experts models",
            )
        ]

    def describe(self, opts: FormatOptions) -> str:
        if isinstance(opts, Nf4Options):
            return f"bnb-nf4: NF4 weights{' + double quant' if opts.double_quant else ''}, {opts.compute_dtype} compute"
        return f"bnb-int8: LLM.int8() weights, outlier threshold {getattr(opts, 'threshold', 6.0)}"

    kind = "bitsandbytes"

    def tags(self, opts: FormatOptions) -> list[str]:
        return ["bitsandbytes", "4-bit", "nf4"] if opts.format == "bnb-nf4" else ["bitsandbytes", "8-bit", "int8"]

    def tgi_quantize(self, opts: FormatOptions) -> str:
        """TGI's --quantize value for the same scheme (TGI quantizes at load time)."""
        return "bitsandbytes-nf4" if opts.format == "bnb-nf4" else "bitsandbytes"

    def serving_notes(self, opts: FormatOptions) -> list[str]:
        return [
            f"{opts.artifact}: vLLM and TGI serve bitsandbytes checkpoints on GPU only; transformers "
            "also runs them on CPU (slowly)"
        ]

    def cost(self, opts: FormatOptions, c: Any) -> QuantizeCost:
        s = c.shape
        bits = 0.53 if opts.format == "bnb-nf4" else 1.0
        seconds = 0.5 + s.params / (45e6 * c.scale("memory_gbps"))
        written = int(s.linear * bits + s.embeddings * 2)
        # measured: 482 MB for a 0.1 M-parameter model (the worker), 685-769 MB for SmolLM2-135M: the written
        # tensors and the loaded bf16 model's pages, up to a shard of them resident at a time
        peak = 480 + (written + min(0.4 * c.bf16_bytes(), 2 * GB)) / MB
        return QuantizeCost(seconds, peak, written, "loaded and converted tensor by tensor")

    def quantize(self, opts: FormatOptions, inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
        import torch
        from transformers import AutoTokenizer

        source = inputs["source"]
        # Again here, on the checkpoint itself: `plan` could not read every source's config (a Hub model offline).
        refused = self.problems(opts, json.loads((source / "config.json").read_text()))
        if refused:
            raise RecipeError(refused[0][1], field=("formats", opts.format))
        ctx.status("loading and quantizing with bitsandbytes")
        # bitsandbytes quantizes while the weights load; device_map keeps it on CPU when there is no GPU.
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = from_pretrained_pread(
            source,
            trust_remote_code=ctx.trust_remote_code,
            quantization_config=config(opts),
            dtype=torch.bfloat16,
            device_map=device,
        )
        ctx.status("saving pre-quantized checkpoint")
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(source, trust_remote_code=ctx.trust_remote_code).save_pretrained(out)
        return {"quantization_config": config(opts).to_dict(), "quantized_on": device}
