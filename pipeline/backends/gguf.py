"""GGUF for llama.cpp and Ollama: llama.cpp's converter, importance matrix and quantizer.

One F16/BF16 conversion and one importance matrix per run (shared steps: gguf_convert, gguf_imatrix,
and for `type: auto` gguf_sensitivity); each GGUF type is then one `llama-quantize` call, optionally
split into shards with `llama-gguf-split`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.backends import (
    Backend,
    FormatOptions,
    QuantizeCost,
    SharedStep,
    always_active,
    gguf_auto,
    gguf_convert,
    gguf_cost,
    gguf_imatrix,
    gguf_rows,
    gguf_sensitivity,
    register,
)
from pipeline.checkpoints import moe
from pipeline.fingerprint import ARGS, file_sha256
from pipeline.stage_id import CALIBRATION, SOURCE, Kind
from pipeline.tools import cpus, llamacpp_toolchain
from pipeline.tools.processes import run_logged

# What llama-quantize accepts (tools/quantize/quantize.cpp), minus aliases and experimental types.
TYPES = (
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_1",
    "Q5_0",
    "Q4_K_M",
    "Q4_K_S",
    "Q4_1",
    "Q4_0",
    "IQ4_XS",
    "IQ4_NL",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_S",
    "IQ3_M",
    "IQ3_S",
    "IQ3_XS",
    "IQ3_XXS",
    "Q2_K",
    "Q2_K_S",
    "IQ2_M",
    "IQ2_S",
    "IQ2_XS",
    "IQ2_XXS",
    "IQ1_M",
    "IQ1_S",
    "TQ2_0",
    "TQ1_0",
    "BF16",
    "F16",
)
NEEDS_IMATRIX = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K_S"}  # llama-quantize refuses them without one
UNQUANTIZED = {"F16", "BF16"}


class GgufOptions(FormatOptions):
    """A llama.cpp GGUF file of one quantization type, with the tokenizer and chat template inside.

    type: auto chooses a type per tensor at a size budget (one of like, target_bpw, target_size) from
    measured sensitivity (backends/gguf_auto.py); llama-quantize writes it."""

    format: Literal["gguf"]
    type: Literal[TYPES + ("auto",)]  # type: ignore[valid-type]
    # type: ignore[valid-type]
    like: Literal[TYPES] | None = Field(None, description="type: auto at the size llama.cpp's own TYPE has")
    target_bpw: float | None = Field(
        None, gt=1.5, lt=16, description="type: auto at this many bits per weight (llama.cpp's BPW)"
    )
    target_size: str | None = Field(
        None, pattern=r"^[0-9]+(\.[0-9]+)?(MB|GB|MiB|GiB)$", description="type: auto at this file size, e.g. 105MB"
    )
    imatrix: Literal["auto", "off"] | Path = Field(
        "auto", description="auto: computed from the run's calibration set; off; or a file"
    )
    convert_dtype: Literal["f16", "bf16"] = Field(
        "f16", description="precision of the shared conversion that is quantized"
    )
    split_max_size: str | None = Field(
        None, pattern=r"^[1-9][0-9]*[MG]$", description="shard size, e.g. 2G; null = one file"
    )
    always_active: Literal[TYPES] | None = Field(  # type: ignore[valid-type]
        None,
        description="mixture of experts: the type of the tensors every token uses (attention, shared experts, "
        "dense layers), e.g. Q8_0, while the routed experts take `type`",
    )

    @property
    def artifact(self) -> str:
        if self.name or self.type != "auto":
            keep = f"-active-{self.always_active.lower()}" if self.always_active else ""
            return self.name or f"gguf-{self.type.lower()}{keep}"
        return f"gguf-auto-{self.budget.replace(' ', '').lower()}"

    @property
    def budget(self) -> str:
        """type: auto's size budget as written: "Q4_K_M", "4.85 bpw" or "105MB"."""
        return self.like or (f"{self.target_bpw:g} bpw" if self.target_bpw else str(self.target_size))

    @model_validator(mode="after")
    def _one_budget(self) -> GgufOptions:
        given = [f for f in ("like", "target_bpw", "target_size") if getattr(self, f) is not None]
        if self.type == "auto" and len(given) != 1:
            raise ValueError(
                "type: auto needs exactly one size budget: like (a llama.cpp type), target_bpw or target_size"
            )
        if self.type != "auto" and given:
            raise ValueError(f"{given[0]} is a size budget for type: auto; type {self.type} has its own size")
        if self.type == "auto" and self.always_active:
            raise ValueError("always_active is for a fixed type: type: auto already chooses every tensor's type")
        return self

    @field_validator("imatrix", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false

    def uses_imatrix(self) -> bool:
        return self.imatrix != "off" and self.type not in UNQUANTIZED


@register
class GgufBackend(Backend):
    name = "llama.cpp"
    formats = {"gguf": GgufOptions}
    packages = ("transformers", "torch")  # the converter reads the checkpoint through them
    engine = "llama.cpp"
    kind = "gguf"
    library_name = "gguf"

    def missing(self) -> list[str]:
        return [] if llamacpp_toolchain.find() else ["llama.cpp's tools"]

    def install_hint(self) -> str:
        return f"run `{llamacpp_toolchain.SETUP_HINT}` (builds llama.cpp once per machine, about 10 minutes on 2 cores)"

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "llama.cpp": f"llama-cpp-python {llamacpp_toolchain.VERSION} source"}

    def needs_calibration(self, opts: FormatOptions) -> bool:
        # type: auto probes its sensitivity on the calibration text even with a given importance matrix
        return isinstance(opts, GgufOptions) and opts.uses_imatrix() and (opts.imatrix == "auto" or opts.type == "auto")

    def describe(self, opts: FormatOptions) -> str:
        assert isinstance(opts, GgufOptions)
        im = (
            ""
            if not opts.uses_imatrix()
            else " + importance matrix"
            if opts.imatrix == "auto"
            else f" + imatrix {opts.imatrix}"
        )
        if opts.type == "auto":
            budget = f"the size of {opts.like}" if opts.like else opts.budget
            how = f"a type per tensor at {budget}, from measured sensitivity{im}"
            return f"gguf auto: {how} (from {opts.convert_dtype.upper()})"
        keep = f", always-active tensors {opts.always_active}" if opts.always_active else ""
        return f"gguf {opts.type}{im}{keep} (from {opts.convert_dtype.upper()})"

    def label(self, opts: FormatOptions) -> str:
        assert isinstance(opts, GgufOptions)
        if opts.type == "auto":
            return f"gguf auto ~{opts.budget}"
        return f"gguf {opts.type}" + (f" + {opts.always_active} always-active" if opts.always_active else "")

    def tags(self, opts: FormatOptions) -> list[str]:
        assert isinstance(opts, GgufOptions)
        kind = "mixed-precision" if opts.type == "auto" else opts.type.lower()  # auto: a type per tensor
        return ["gguf", "llama-cpp", kind] + (["imatrix"] if opts.uses_imatrix() else [])

    def serving_notes(self, opts: FormatOptions) -> list[str]:
        return [
            f"{opts.artifact}: llama.cpp (llama-server, llama-cpp-python) and Ollama; vLLM's GGUF "
            "support is experimental"
        ]

    def problems(self, opts: FormatOptions, model_config: dict[str, Any] | None) -> list[tuple[str, str]]:
        assert isinstance(opts, GgufOptions)
        if opts.type == "auto" and not opts.uses_imatrix():
            return [
                (
                    "imatrix",
                    "type: auto weighs each tensor's error by the importance matrix; use imatrix: auto or a file",
                )
            ]
        if opts.type in NEEDS_IMATRIX and not opts.uses_imatrix():
            return [("imatrix", f"llama.cpp refuses {opts.type} without an importance matrix; use imatrix: auto")]
        if isinstance(opts.imatrix, Path) and not opts.imatrix.is_file():
            return [("imatrix", f"no such file: {opts.imatrix}")]
        chain = llamacpp_toolchain.find()
        archs = (model_config or {}).get("architectures") or []
        if chain and archs and archs[0] not in chain.architectures():
            return [
                (
                    "format",
                    f"llama.cpp's converter cannot convert {archs[0]} models (it knows {len(chain.architectures())} "
                    "architectures, not this one)",
                )
            ]
        if opts.always_active and model_config and not moe.is_moe(model_config):
            return [("always_active", "a dense model: every tensor is always active; choose the type alone")]
        return _loader_problems(model_config or {})

    def shared_steps(self, opts: FormatOptions) -> list[SharedStep]:
        assert isinstance(opts, GgufOptions)
        dtype, versions = opts.convert_dtype, self.versions()
        convert = SharedStep(
            Kind.GGUF_CONVERT,
            dtype,
            f"HF → {dtype.upper()} GGUF (llama.cpp converter)",
            {"version": gguf_convert.VERSION, "outtype": dtype},
            needs=(SOURCE,),
            versions=versions,
        )
        if not opts.uses_imatrix():
            return [convert]
        matrix = _matrix_step(opts, convert, versions)
        if opts.type != "auto":
            return [convert, matrix]
        sensitivity = SharedStep(
            Kind.GGUF_SENSITIVITY,
            dtype if opts.imatrix == "auto" else f"{dtype}+{matrix.arg}",  # which matrix weighs it
            "cost of each llama.cpp type per tensor (weighted error, KLD probes on calibration text)",
            {
                "version": gguf_sensitivity.VERSION,
                "ladder": gguf_sensitivity.LADDER,
                "probe": gguf_sensitivity.PROBE,
                "row_sample": gguf_rows.MAX_ELEMENTS,
                ARGS: {"convert": convert.id, "matrix": matrix.id},
            },
            needs=(convert.id, matrix.id, CALIBRATION),
            versions=versions,
            label=None if opts.imatrix == "auto" else f"gguf-sensitivity-{dtype}-{matrix.label}",
        )
        return [convert, matrix, sensitivity]

    def cost(self, opts: FormatOptions, c: Any) -> QuantizeCost:
        return gguf_cost.cost(opts, c)

    def quantize(self, opts: FormatOptions, inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
        assert isinstance(opts, GgufOptions)
        chain = llamacpp_toolchain.require()
        steps = {s.kind: s.id for s in self.shared_steps(opts)}
        base = gguf_convert.output(inputs[steps[Kind.GGUF_CONVERT]])
        matrix = gguf_imatrix.output(inputs[steps[Kind.IMATRIX]]) if Kind.IMATRIX in steps else None
        target = out / base.name.replace(f"-{opts.convert_dtype.upper()}.gguf", f"-{opts.type.upper()}.gguf")
        cmd: list[Any] = [chain.tool("llama-quantize")]
        cwd = None
        if matrix is not None:
            args, cwd = gguf_imatrix.quantize_args(matrix)  # no local path recorded in the artifact
            cmd += args
        facts: dict[str, Any] = {}
        if opts.type == "auto":
            facts = gguf_auto.choose_for(opts, chain, base, matrix, inputs[steps[Kind.GGUF_SENSITIVITY]], out, ctx)
            cmd += ["--pure", "--tensor-type-file", out / gguf_auto.TYPES_FILE]
        for pattern in always_active.GGUF if opts.always_active else ():
            cmd += ["--tensor-type", f"{pattern}={opts.always_active}"]
        cmd += [base, target, "Q8_0" if opts.type == "auto" else opts.type, str(cpus.count())]
        ctx.status(f"llama-quantize {opts.type}" + (" with importance matrix" if matrix else ""))
        run_logged(cmd, on_line=lambda line: _tensor_progress(line, ctx, opts.type), cwd=cwd)
        files = [target]
        if opts.split_max_size:
            ctx.status(f"splitting into {opts.split_max_size} shards")
            prefix = target.with_suffix("")
            run_logged(
                [chain.tool("llama-gguf-split"), "--split", "--split-max-size", opts.split_max_size, target, prefix]
            )
            target.unlink()
            files = sorted(out.glob(f"{prefix.name}-*-of-*.gguf"))
        return {
            "files": [f.name for f in files],
            "type": opts.type,
            "imatrix": matrix.name if matrix else None,
            "converted_from": base.name,
            **facts,
            **metadata(files[0]),
        }


def _matrix_step(opts: GgufOptions, convert: SharedStep, versions: dict[str, str]) -> SharedStep:
    """The importance matrix: computed over the run's calibration set, or the recipe's own file."""
    if opts.imatrix == "auto":
        return SharedStep(
            Kind.IMATRIX,
            convert.arg,
            "importance matrix over the calibration set (llama-imatrix)",
            {"version": gguf_imatrix.VERSION, ARGS: {"convert": convert.id}},
            needs=(convert.id, CALIBRATION),
            versions=versions,
        )
    given = Path(opts.imatrix)
    digest = file_sha256(given)
    # Named by content, not by file name: a/imatrix.gguf and b/imatrix.gguf are two matrices, two stages.
    return SharedStep(
        Kind.IMATRIX,
        f"{given.name}#{digest[:12]}",
        f"importance matrix from {given}",
        {"version": gguf_imatrix.VERSION, "sha256": digest, ARGS: {"file": str(given)}},
        needs=(),
        label=f"imatrix-file-{given.stem}-{digest[:12]}",
    )


def _tensor_progress(line: str, ctx: Any, qtype: str) -> None:
    if line.startswith("[") and "/" in line.split("]")[0]:  # "[  12/ 272] blk.0.attn_q.weight ..."
        ctx.status(f"llama-quantize {qtype}: tensor {line[1 : line.index(']')].strip()}")


def metadata(path: Path) -> dict[str, Any]:
    """What llama.cpp will read from the file: architecture, file type, chat template and tokenizer presence."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def field(name: str) -> Any:
        f = reader.get_field(name)
        return None if f is None else f.contents()

    template = field("tokenizer.chat_template")
    return {
        "architecture": field("general.architecture"),
        "file_type": field("general.file_type"),
        "tokenizer_model": field("tokenizer.ggml.model"),
        "vocab_size": len(field("tokenizer.ggml.tokens") or []),
        "has_chat_template": bool(template),
        "tensors": len(reader.tensors),
    }


def _loader_problems(config: dict[str, Any]) -> list[tuple[str, str]]:
    """What llama.cpp's converter writes but its loader then refuses. DeepSeek-V2 without a query LoRA
    (q_lora_rank null, as V2-Lite has it): the converter omits the key, and llama.cpp tells "Lite" by its
    layer count (26 or 27), so any other depth fails to load (key not found: deepseek2.attention.q_lora_rank)."""
    lite_depth = config.get("num_hidden_layers") in (26, 27)
    if config.get("model_type") == "deepseek_v2" and config.get("q_lora_rank") is None and not lite_depth:
        layers = config.get("num_hidden_layers")
        return [
            (
                "format",
                f"llama.cpp loads a deepseek_v2 model without q_lora_rank only at DeepSeek-V2-Lite's depth (26 or 27 "
                f"layers), not {layers}: the GGUF would not load",
            )
        ]
    return []
