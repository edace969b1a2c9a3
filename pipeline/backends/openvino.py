"""OpenVINO IR with NNCF weight compression, for CPU serving (openvino-genai, OpenVINO Model Server).

optimum-intel does the work, in its own environment (pipeline.tools.optimum_intel): one export of the
unquantized model per run (a shared stage, also the OpenVINO engine's floor), then each format is
NNCF weight compression of that export, data-aware modes fed the run's calibration texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.backends import MB, Backend, FormatOptions, QuantizeCost, SharedStep, group_size_problems, register
from pipeline.data import samples as calibration_samples
from pipeline.stage_id import CALIBRATION, SOURCE, Kind
from pipeline.tools import environments, optimum_intel

MODES = ("data-free", "awq", "scale_estimation", "awq+scale_estimation", "gptq")


class _OvOptions(FormatOptions):
    symmetric: bool = Field(False, description="symmetric weights (no zero point)")
    export_dtype: Literal["fp16", "fp32"] = Field(
        "fp16", description="weights of the shared unquantized export that is compressed"
    )


class OvInt8Options(_OvOptions):
    """INT8 weights, one scale per output channel (data-free); activations stay in the runtime's precision."""

    format: Literal["openvino-int8"]


class OvInt4Options(_OvOptions):
    """INT4 weights in groups; embeddings and the output layer in INT8 (NNCF's default), the rest by `ratio`."""

    format: Literal["openvino-int4"]
    group_size: int = Field(128, description="weights per scale; -1 = one scale per output channel")
    ratio: float = Field(
        1.0, ge=0, le=1, description="share of the other layers in INT4, the rest INT8 (NNCF ranks them by sensitivity)"
    )
    # type: ignore[valid-type]
    mode: Literal[MODES] = Field("awq+scale_estimation", description="data-aware modes use the run's calibration set")

    @field_validator("group_size")
    @classmethod
    def _group(cls, v: int) -> int:
        if v != -1 and v <= 0:
            raise ValueError("must be positive, or -1 for one scale per output channel")
        return v


def nncf_config(opts: FormatOptions) -> dict[str, Any]:
    """optimum-intel's OVWeightQuantizationConfig fields for these options."""
    if isinstance(opts, OvInt8Options):
        return {"bits": 8, "sym": opts.symmetric}
    assert isinstance(opts, OvInt4Options)
    config: dict[str, Any] = {"bits": 4, "sym": opts.symmetric, "group_size": opts.group_size, "ratio": opts.ratio}
    if "awq" in opts.mode:
        config["quant_method"] = "awq"
    if "scale_estimation" in opts.mode:
        config["scale_estimation"] = True
    if opts.mode == "gptq":
        config["gptq"] = True
    return config


@register
class OpenVinoBackend(Backend):
    name = "openvino"
    formats = {"openvino-int4": OvInt4Options, "openvino-int8": OvInt8Options}
    engine = "openvino"
    kind = "openvino"
    library_name = "openvino"

    def install_hint(self) -> str:
        return "python -m pipeline setup openvino (or let the first run create it)"

    def versions(self) -> dict[str, str]:
        # The scripts that run in the environment shape the outputs as much as the libraries do.
        return {
            "openvino environment": " ".join(environments.get("openvino").requirements),
            "scripts": optimum_intel.scripts_digest(),
        }

    def needs_calibration(self, opts: FormatOptions) -> bool:
        return isinstance(opts, OvInt4Options) and opts.mode != "data-free"

    def describe(self, opts: FormatOptions) -> str:
        if isinstance(opts, OvInt8Options):
            return f"OpenVINO INT8 weights per channel ({'sym' if opts.symmetric else 'asym'}), NNCF"
        assert isinstance(opts, OvInt4Options)
        group = "per channel" if opts.group_size == -1 else f"g{opts.group_size}"
        mixed = f", {opts.ratio:.0%} of layers INT4, rest INT8" if opts.ratio < 1 else ""
        return f"OpenVINO INT4 {group} ({'sym' if opts.symmetric else 'asym'}, {opts.mode}{mixed}), NNCF"

    def tags(self, opts: FormatOptions) -> list[str]:
        return ["openvino", "nncf", "int4" if isinstance(opts, OvInt4Options) else "int8"]

    def serving_notes(self, opts: FormatOptions) -> list[str]:
        return [
            f"{opts.artifact}: OpenVINO (openvino-genai, OpenVINO Model Server, optimum-intel); "
            "built in its own environment"
        ]

    def problems(self, opts: FormatOptions, model_config: dict[str, Any] | None) -> list[tuple[str, str]]:
        return group_size_problems(getattr(opts, "group_size", None), model_config)

    def shared_steps(self, opts: FormatOptions) -> list[SharedStep]:
        assert isinstance(opts, _OvOptions)
        dtype = opts.export_dtype
        return [
            SharedStep(
                Kind.OPENVINO_EXPORT,
                dtype,
                f"HF → OpenVINO IR, {dtype.upper()} weights, tokenizer included (optimum-intel)",
                {"version": 1, "dtype": dtype},
                needs=(SOURCE,),
                versions=self.versions(),
            )
        ]

    def cost(self, opts: FormatOptions, c: Any) -> QuantizeCost:
        s = c.shape
        bits = 4.5 if opts.format.endswith("int4") else 8
        seconds = 20 + s.params / (15e6 * c.scale("memory_gbps"))
        return QuantizeCost(
            seconds, 1500 + 2.5 * c.bf16_bytes() / MB, int(s.params * bits / 8), "NNCF weight compression"
        )

    def quantize(self, opts: FormatOptions, inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
        assert isinstance(opts, _OvOptions)
        texts = calibration_samples.texts(inputs[CALIBRATION]) if self.needs_calibration(opts) else []
        config = nncf_config(opts)
        ctx.status(f"NNCF weight compression ({opts.format}" + (f", {len(texts)} calibration texts)" if texts else ")"))
        ir = inputs[self.shared_steps(opts)[0].id]
        optimum_intel.convert(
            {"op": "compress", "ir": str(ir), "out": str(out), "config": config, "texts": texts}, out, ctx.status
        )
        return {
            "files": sorted(p.name for p in out.iterdir() if p.is_file()),
            "nncf": config,
            "calibration_texts": len(texts),
        }


def export(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    """The openvino-export step (pipeline.registry.STAGES): the source to OpenVINO IR in optimum-intel's venv."""
    request = {
        "op": "export",
        "source": str(inputs[SOURCE]),
        "out": str(out),
        "dtype": config["dtype"],
        "trust_remote_code": ctx.trust_remote_code,
    }
    return optimum_intel.convert(request, out, ctx.status)
