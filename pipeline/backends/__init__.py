"""Format backends behind one small interface, found by format name.

A backend module defines one `Backend` subclass and the pydantic options model of each format it
provides, and registers itself with `@register`. Adding a format family = one new module here plus
its name in pipeline/registry.py. Modules must stay cheap to import: heavy libraries are
imported inside `quantize`, so `plan` and `list-formats` never pay for them.

A backend *declares* what its formats need besides the source and the calibration set (`shared_steps`:
a GGUF conversion, an importance matrix, an OpenVINO export) as `SharedStep`s, with the function that
run it; pipeline.graph makes them stages, once per run for every format that names the same one.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from pipeline import recipe, registry
from pipeline.recipe import FormatOptions
from pipeline.stage_id import Kind, StageId
from pipeline.versions import versions

GB, MB = 1e9, 1e6


class QuantizeCost(NamedTuple):
    """A quantize stage's estimate on this machine (pipeline.cost makes it an Estimate and corrects it)."""

    seconds: float
    peak_rss_mb: float
    written_bytes: int
    basis: str = ""  # what the figure counts, e.g. "24 layers x 4096 tokens"
    scratch_bytes: int = 0  # written and deleted again within the stage (llm-compressor's offload folder)


@dataclass(frozen=True)
class SharedStep:
    """Work some formats share, done once per run before their quantize stages (declared by a backend).

    Its stage id is `kind[arg]`; its cache key covers `config` (but its `args`, pipeline.graph.stage),
    `versions` and the keys of `needs` (stage ids: "source", "calibration", or another step's id), in that
    order. The module pipeline.registry.STAGES names for its kind runs it with `config`."""

    kind: Kind  # Kind.GGUF_CONVERT
    arg: str  # "f16": tells the steps of one kind apart
    describe: str
    config: dict[str, Any]
    needs: tuple[str, ...]
    versions: dict[str, str] = field(default_factory=dict)
    label: str | None = None  # output directory prefix, when not `kind-arg`

    @property
    def id(self) -> StageId:
        return StageId(self.kind, self.arg)


class Backend:
    name: ClassVar[str]
    formats: ClassVar[dict[str, type[FormatOptions]]]
    modules: ClassVar[tuple[str, ...]] = ()  # import names that must be installed
    packages: ClassVar[tuple[str, ...]] = ()  # distributions whose versions go into the cache key
    extra: ClassVar[str] = ""  # pip extra of this project that installs them
    engine: ClassVar[str] = "transformers"  # what evaluates and serves the artifact on CPU here
    kind: ClassVar[str] = "compressed-tensors"  # what the artifact is on disk: serving targets decide on this
    library_name: ClassVar[str] = "transformers"  # the Hub's library_name in the model card

    def missing(self) -> list[str]:
        return [m for m in self.modules if importlib.util.find_spec(m) is None]

    def install_hint(self) -> str:
        return f"pip install 'llm-quant-pipeline[{self.extra}]'"

    def versions(self) -> dict[str, str]:
        return versions(self.packages)

    def needs_calibration(self, opts: FormatOptions) -> bool:
        return False

    def describe(self, opts: FormatOptions) -> str:
        return opts.format

    def label(self, opts: FormatOptions) -> str:
        """The artifact's format in the results table ("gguf Q4_K_M"): stored in the manifest at plan time."""
        return opts.format

    def serving_notes(self, opts: FormatOptions) -> list[str]:
        """Where this artifact can run, when that is narrower than "anywhere" (shown by plan)."""
        return []

    def scheme(self, opts: FormatOptions) -> dict[str, Any] | None:
        """The compressed-tensors quantization scheme the artifact is stored in (its config group: "weights",
        "input_activations"), for engines that judge by scheme what they can run; None: not such a checkpoint."""
        return None

    def tags(self, opts: FormatOptions) -> list[str]:
        """Hub tags of the artifact's model card, beyond the ones every card gets."""
        return []

    def problems(self, opts: FormatOptions, model_config: dict[str, Any] | None) -> list[tuple[str, str]]:
        """(option field, message) for each problem found before any heavy work.

        model_config is the source's config.json (or what its GGUF metadata says) when known offline."""
        return []

    def content(self, opts: FormatOptions) -> dict[str, str]:
        """Content hashes of the files the options name (e.g. a recipe file): part of the cache key, so
        editing such a file reruns the stage even though the recipe did not change."""
        return {}

    def shared_steps(self, opts: FormatOptions) -> list[SharedStep]:
        """What this format needs before quantizing, in dependency order; shared by every format naming the same id."""
        return []

    def cost(self, opts: FormatOptions, c: Any) -> QuantizeCost:
        """What quantizing costs here: `c` is the plan's pipeline.cost.model.CostInputs (the model's shapes, the
        recipe's token counts, this machine's measured rates). Every family declares its own: a family without
        one has no estimate (tests/test_stage_id.py fails), it never borrows another family's."""
        raise NotImplementedError(f"{self.name} declares no cost")

    def quantize(self, opts: FormatOptions, inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
        """Write the artifact into `out` (an empty temp dir); return facts for the manifest.

        `inputs` maps stage ids to finished outputs: "source", "calibration" when needs_calibration(opts),
        and the ids of this format's shared steps."""
        raise NotImplementedError


GROUP_SIZES = (32, 64, 128, 256)


def layer_widths(model_config: dict[str, Any]) -> dict[str, int]:
    """Input widths of a decoder block's quantized Linear layers, from config.json alone (no weights needed):
    the hidden size, the dense MLP's and the experts' intermediate sizes, the attention output's heads x
    head_dim where that is not the hidden size, and DeepSeek's low-rank (MLA) projections."""
    c = {**model_config, **(model_config.get("text_config") or {})}  # multimodal configs nest the text model
    hidden, heads = c.get("hidden_size"), c.get("num_attention_heads")
    attention_out = heads * (c.get("v_head_dim") or c.get("head_dim") or 0) if heads else 0
    apart = bool(attention_out) and attention_out != hidden  # o_proj named on its own only where it differs
    named = {
        "q_proj/k_proj/v_proj/gate_proj/up_proj" if apart else "q_proj/k_proj/v_proj/o_proj/gate_proj/up_proj": hidden,
        "down_proj": c.get("intermediate_size"),
        "experts' down_proj": c.get("moe_intermediate_size"),
        "shared expert's down_proj": c.get("shared_expert_intermediate_size"),
        "o_proj": attention_out if apart else None,
        "q_b_proj": c.get("q_lora_rank"),
        "kv_b_proj": c.get("kv_lora_rank"),
    }
    return {name: w for name, w in named.items() if isinstance(w, int) and w > 0}


def group_size_problems(group: int | None, model_config: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A group size must divide every quantized layer's input width; the message names those that fit."""
    if not group or group < 0 or not model_config:
        return []
    widths = layer_widths(model_config)
    bad = {name: w for name, w in widths.items() if w % group}
    if not bad:
        return []
    fits = [g for g in GROUP_SIZES if all(w % g == 0 for w in widths.values())]
    layers = ", ".join(f"{n} (input width {w})" for n, w in bad.items())
    hint = (
        f"group sizes that fit every layer: {', '.join(map(str, fits))}" if fits else "no power-of-two group size fits"
    )
    return [("group_size", f"{group} does not divide {layers}; {hint}")]


@dataclass(frozen=True)
class FormatInfo:
    name: str
    backend: Backend
    options: type[FormatOptions]


FORMATS: dict[str, FormatInfo] = {}


def register(cls: type[Backend]) -> type[Backend]:
    backend = cls()
    for fmt, options in cls.formats.items():
        if fmt in FORMATS:
            raise RuntimeError(f"format {fmt!r} registered twice")
        FORMATS[fmt] = FormatInfo(fmt, backend, options)
    return cls


def get_format(name: str) -> FormatInfo:
    return FORMATS[name]


# Registration: each backend module registers itself. The recipe's `formats` union is complete only after it.
for _name in registry.BACKENDS:
    importlib.import_module(f"pipeline.backends.{_name}")

recipe.define_formats(tuple(info.options for info in FORMATS.values()))
