"""OpenVINO IR with NNCF weight compression, for CPU serving (openvino-genai, OpenVINO Model Server).

optimum-intel does the work, in its own environment (pipeline.openvino_tool): one export of the
unquantized model per run (a shared stage, also the OpenVINO engine's floor), then each format is
NNCF weight compression of that export, data-aware modes fed the run's calibration texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.backends import Backend, FormatOptions, group_size_problems, register
from pipeline.stage import Stage

MODES = ("data-free", "awq", "scale_estimation", "awq+scale_estimation", "gptq")


class _OvOptions(FormatOptions):
    symmetric: bool = Field(False, description="symmetric weights (no zero point)")
    export_dtype: Literal["fp16", "fp32"] = Field("fp16", description="weights of the shared unquantized export that is compressed")


class OvInt8Options(_OvOptions):
    """INT8 weights, one scale per output channel (data-free); activations stay in the runtime's precision."""

    format: Literal["openvino-int8"]


class OvInt4Options(_OvOptions):
    """INT4 weights in groups; embeddings and the output layer in INT8 (NNCF's default), the rest by `ratio`."""

    format: Literal["openvino-int4"]
    group_size: int = Field(128, description="weights per scale; -1 = one scale per output channel")
    ratio: float = Field(1.0, ge=0, le=1, description="share of the other layers in INT4, the rest INT8 (NNCF ranks them by sensitivity)")
    mode: Literal[MODES] = Field("awq+scale_estimation", description="data-aware modes use the run's calibration set")  # type: ignore[valid-type]

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

    def install_hint(self) -> str:
        return "python -m pipeline setup openvino (or let the first run create it)"

    def versions(self) -> dict[str, str]:
        from pipeline import openvino_tool, toolenv
        from pipeline.fingerprint import sha256_file

        # The scripts that run in the environment shape the outputs as much as the libraries do.
        scripts = "".join(sha256_file(p) for p in sorted(openvino_tool.SCRIPTS.glob("openvino_*.py")))
        return {"openvino environment": " ".join(toolenv.get("openvino").requirements), "scripts": scripts[:16]}

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
        return [f"{opts.artifact}: OpenVINO (openvino-genai, OpenVINO Model Server, optimum-intel); built in its own environment"]

    def problems(self, opts: FormatOptions, model_config: dict[str, Any] | None) -> list[tuple[str, str]]:
        return group_size_problems(getattr(opts, "group_size", None), model_config)

    def prerequisites(self, opts: FormatOptions) -> list[Stage]:
        from pipeline import openvino_tool

        assert isinstance(opts, _OvOptions)
        dtype = opts.export_dtype
        return [Stage(
            id=f"openvino-export[{dtype}]", kind="openvino-export", label=f"openvino-export-{dtype}",
            describe=f"HF → OpenVINO IR, {dtype.upper()} weights, tokenizer included (optimum-intel)", config={"version": 1, "dtype": dtype},
            deps=["source"], versions=self.versions(),
            run=lambda out, inputs, ctx: openvino_tool.convert(
                {"op": "export", "source": str(inputs["source"]), "out": str(out), "dtype": dtype, "trust_remote_code": ctx.trust_remote_code},
                out, ctx.status))]

    def quantize(self, opts: FormatOptions, inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
        from pipeline import openvino_tool
        from pipeline.stages import calibration

        assert isinstance(opts, _OvOptions)
        texts = [s["text"] for s in calibration.load(inputs["calibration"])] if self.needs_calibration(opts) else []
        config = nncf_config(opts)
        ctx.status(f"NNCF weight compression ({opts.format}" + (f", {len(texts)} calibration texts)" if texts else ")"))
        ir = inputs[f"openvino-export[{opts.export_dtype}]"]
        openvino_tool.convert({"op": "compress", "ir": str(ir), "out": str(out), "config": config, "texts": texts}, out, ctx.status)
        return {"files": sorted(p.name for p in out.iterdir() if p.is_file()), "nncf": config, "calibration_texts": len(texts)}
