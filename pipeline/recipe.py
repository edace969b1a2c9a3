"""The recipe: pydantic models, `extra="forbid"` everywhere, one section per stage.

This module imports nothing heavier than pydantic and nothing else of the pipeline: every layer reads
it. The options of each format live with their backend (pipeline.backends); the backends registry
hands them to `define_formats`, which completes `Recipe.formats` (a union tagged by `format`)."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from pipeline.stage_id import Kind

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # becomes a directory name: no separators, no '..'

HUB_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def _hub_repo_id(v: str | None) -> str | None:
    if v is not None and not HUB_REPO_RE.fullmatch(v):
        raise ValueError(f"{v!r} is not a Hub repo id of the form 'org/name'")
    return v


CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
SERVED_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


def _printable(value: Any, where: str) -> Any:
    """Values that end up in generated files (env files, scripts, YAML, cards) hold no control
    characters: a newline in a tgi_args value would add a line, e.g. a second MODEL_ID, to tgi.env."""
    leaves = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
    for leaf in leaves:
        if isinstance(leaf, (dict, list)):
            _printable(leaf, where)
        elif isinstance(leaf, str) and CONTROL_RE.search(leaf):
            raise ValueError(
                f"{where}: {leaf!r} contains a control character (newline, tab, ...): it would change "
                "the generated files"
            )
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatesSpec(Strict):
    """Quality gates: limits on an artifact's evaluation (pipeline.evaluation.gates applies them)."""

    max_kld: float | None = Field(None, ge=0, description="mean KL divergence from the base model, nats per token")
    max_ppl_increase_pct: float | None = Field(None, ge=0, description="perplexity increase over the base model, %")
    min_top1: float | None = Field(None, ge=0, le=100, description="same top-1 token as the base model, %")


class FormatOptions(Strict):
    """Fields every format entry of a recipe has; each format adds its own options (pipeline.backends)."""

    format: str
    name: str | None = Field(
        None, pattern=NAME_RE, description="artifact name (directory and manifest label); defaults to the format"
    )
    gates: GatesSpec | None = Field(None, description="quality gates for this artifact (override evaluation.gates)")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str | None) -> str | None:
        # evaluation/base, serve-check[base], evaluation/floor-ENGINE and evaluation/ARTIFACT-vllm are the run's own
        if v is not None and (v == "base" or v.startswith("floor-") or v.endswith("-vllm")):
            raise ValueError(
                f"{v!r} is reserved (the base model's rows are 'base', engine floors 'floor-*', vLLM rows '*-vllm'); "
                "choose another name"
            )
        return v

    @property
    def artifact(self) -> str:
        return self.name or self.format


class PackageFile(Strict):
    """A file that an installed Python package ships, e.g. the embedded SmolLM2 GGUF."""

    package: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str

    @field_validator("file")
    @classmethod
    def _relative(cls, v: str) -> str:
        if v.startswith("/") or ".." in Path(v).parts:
            raise ValueError("must be a path inside the package (no leading '/', no '..')")
        return v


class ModelSource(Strict):
    """Exactly one of: a Hub repo (with a pinned commit), a local HF directory, or a GGUF file."""

    hub: str | None = Field(None, description="Hub repo id, e.g. meta-llama/Llama-3.1-8B-Instruct")
    revision: str | None = Field(None, description="full 40-character commit hash of the Hub repo")
    path: Path | None = Field(None, description="local HF checkpoint directory (relative to the recipe)")
    gguf: Path | PackageFile | None = Field(None, description="GGUF file, or {package, file} shipped by a package")
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    trust_remote_code: bool = False
    allow_pickle: bool = False

    _repo_id = field_validator("hub")(classmethod(lambda cls, v: _hub_repo_id(v)))

    @field_validator("revision")
    @classmethod
    def _pinned(cls, v: str | None) -> str | None:
        if v is not None and not COMMIT_RE.fullmatch(v):
            raise ValueError(
                f"{v!r} is not a full 40-character commit hash; pin the revision so reruns get the same weights"
            )
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        given = [k for k in ("hub", "path", "gguf") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of hub, path, gguf (got {', '.join(given) or 'none'})")
        if self.hub and not self.revision:
            raise ValueError("hub needs revision: a full 40-character commit hash")
        if self.revision and not self.hub:
            raise ValueError("revision only applies to a hub source")
        return self

    @property
    def kind(self) -> str:
        return "hub" if self.hub else "path" if self.path else "gguf"


class CalibrationSource(Strict):
    """Where calibration text comes from. Named sources in calibration/datasets.yaml use this schema too."""

    kind: Literal["hub", "local", "package", "self"]
    description: str | None = None
    hub_id: str | None = Field(
        None,
        pattern=r"^[\w.-]+/[\w.-]+$",
        description="the dataset's Hub id, for model cards' `datasets:` (a hub source: its path when unset)",
    )
    path: str | None = Field(None, description="hub: dataset id")
    name: str | None = Field(None, description="hub: dataset config name")
    split: str = "train"
    revision: str | None = None
    files: list[str] = Field(default_factory=list, description="local: files or globs, relative to the recipe")
    package: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = Field(None, description="package: data file inside the package")
    text_field: str | None = None
    messages_field: str | None = None
    prompts: list[str] = Field(default_factory=list, description="self: seed prompts (default: start from BOS)")
    records: str | None = Field(
        None, pattern=r"^-?[0-9]*:-?[0-9]*$", description="Python slice of the records, e.g. ':-2000' or '-2000:'"
    )

    @model_validator(mode="after")
    def _complete(self) -> CalibrationSource:
        need = {"hub": ["path"], "local": ["files"], "package": ["package", "file"], "self": []}[self.kind]
        missing = [f for f in need if not getattr(self, f)]
        if missing:
            raise ValueError(f"a {self.kind} source needs {', '.join(missing)}")
        if self.kind != "self" and bool(self.text_field) == bool(self.messages_field):
            raise ValueError("give exactly one of text_field (plain text) or messages_field (chat messages)")
        if self.file and (self.file.startswith("/") or ".." in Path(self.file).parts):
            raise ValueError("file must be a path inside the package (no leading '/', no '..')")
        return self


def _catalog_name(v: Any, what: str) -> Any:
    """A name looked up in a YAML catalogue (calibration/datasets.yaml, eval/corpora.yaml), or an inline source."""
    if isinstance(v, str) and not re.fullmatch(NAME_RE, v):
        raise ValueError(f"{v!r} is not a {what} name")
    return v


# Unset calibration.samples: this many, or what a smaller source holds down to the floor (AWQ and GPTQ
# still calibrate on 8 windows of 512 tokens; llm-compressor's examples use 256-512).
DEFAULT_SAMPLES, FEWEST_FITTED_SAMPLES = 64, 8


class CalibrationSpec(Strict):
    """Calibration data shared by every format that needs it (built once per run)."""

    source: str | CalibrationSource = Field(
        "default", description="a name from calibration/datasets.yaml, or an inline source"
    )
    samples: PositiveInt | None = Field(
        None,
        description=f"windows (chat: records) to sample; unset: {DEFAULT_SAMPLES}, or as many as the source "
        f"gives when it holds fewer (at least {FEWEST_FITTED_SAMPLES}; plan says so)",
    )
    seq_len: PositiveInt = 512
    seed: NonNegativeInt = 0
    packing: bool | None = Field(
        None, description="pack plain text into seq_len windows (default: yes for text, no for chat)"
    )

    @field_validator("source")
    @classmethod
    def _name(cls, v: Any) -> Any:
        return _catalog_name(v, "source")

    @property
    def wanted(self) -> int:
        """Samples to draw: the recipe's, else the default."""
        return self.samples or DEFAULT_SAMPLES

    @property
    def required(self) -> int:
        """Fewest samples the set may hold: all the recipe asked for, or (unset) a floor that still calibrates."""
        return self.samples or FEWEST_FITTED_SAMPLES


class SpeedSpec(Strict):
    """Prefill and decode throughput in the artifact's serving engine, repeated until it settles."""

    enabled: bool = True
    prompt_tokens: PositiveInt = 128
    decode_tokens: PositiveInt = 32
    repeats: PositiveInt = Field(
        3, description="samples that must agree (within tolerance) for a figure to count as settled"
    )
    tolerance: float = Field(
        0.10, gt=0, lt=1, description="settled: the last `repeats` samples within ±tolerance of their median"
    )
    budget_s: PositiveFloat = Field(
        60, description="stop repeating after this many seconds; an unsettled figure is marked noisy"
    )
    warmup: NonNegativeInt = 1
    threads: PositiveInt | None = Field(None, description="CPU threads (default: all cores)")


class EvaluationSpec(Strict):
    """Quality against the unquantized model on held-out text, lm-eval tasks, speed, gates."""

    enabled: bool = False
    corpus: str | CalibrationSource = Field("default", description="a name from eval/corpora.yaml, or an inline source")
    windows: PositiveInt = 8
    context: PositiveInt = 512
    seed: NonNegativeInt = 0
    kld: Literal["exact", "top-k"] = Field(
        "exact", description="exact: the base's full log-probs on disk (float16); top-k: a lower bound, small on disk"
    )
    top_k: PositiveInt = Field(256, description="log-probs kept per token with kld: top-k")
    score: Literal["all", "second-half"] = Field(
        "all", description="positions scored: all, or the second half of each window (llama-perplexity's convention)"
    )
    floor: bool = Field(
        True,
        description="also evaluate the unquantized model in every other engine that serves an artifact (its floor)",
    )
    vllm: bool = Field(
        True,
        description="start every artifact vLLM loads (and the base model) from its package's vLLM config and ask it; "
        "skipped with a note where vLLM's environment is not set up (python -m pipeline setup vllm)",
    )
    tasks: list[str] = Field(
        default_factory=list, description="lm-eval task names (local YAMLs in eval/tasks or task_dirs work offline)"
    )
    task_dirs: list[Path] = Field(
        default_factory=list, description="more directories of lm-eval task YAMLs (relative to the recipe)"
    )
    task_limit: PositiveInt | None = Field(None, description="lm-eval `limit`: items per task")
    speed: SpeedSpec = Field(default_factory=SpeedSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    default_gates: bool = Field(True, description="apply eval/gates.yaml's family defaults where no gate is set")

    @field_validator("corpus")
    @classmethod
    def _name(cls, v: Any) -> Any:
        return _catalog_name(v, "corpus")


class ServingSpec(Strict):
    """Settings of the generated serving configs (serving/ in every package)."""

    targets: list[str] | None = Field(
        None, description="serving targets to write (default: every one that can serve the artifact)"
    )
    served_model_name: str | None = Field(
        None, pattern=SERVED_NAME_RE, description="name clients ask for (default: <recipe name>-<artifact>)"
    )
    max_model_len: PositiveInt | None = Field(None, description="context length to serve (default: the model's own)")
    port: int = Field(8000, ge=1, le=65535)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM's share of GPU memory")
    cpu_kv_cache_gib: float = Field(
        2, gt=0, le=1024, description="vLLM's CPU build: KV-cache size in GiB (serving/vllm-cpu.yaml)"
    )
    tensor_parallel_size: PositiveInt = Field(
        1, description="GPUs per replica (vLLM tensor parallel, TGI shards, k8s GPU limit)"
    )
    gpu_layers: NonNegativeInt = Field(999, description="llama.cpp layers offloaded to a GPU (ignored by CPU builds)")
    threads: PositiveInt | None = Field(None, description="llama.cpp CPU threads (default: llama.cpp's choice)")
    vllm_args: dict[str, Any] = Field(default_factory=dict, description="more `vllm serve` options, long names as keys")
    tgi_args: dict[str, Any] = Field(
        default_factory=dict, description="more text-generation-launcher options, long names as keys"
    )

    # Target names and option names are checked against the serving registry when the plan is built
    # (pipeline.graph.checks): the schema does not import the targets.
    @field_validator("vllm_args", "tgi_args")
    @classmethod
    def _plain_options(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        if info.field_name == "tgi_args":  # an env file holds one plain value per line
            bad = [k for k, val in v.items() if not isinstance(val, (str, int, float, bool))]
            if bad:
                raise ValueError(f"{bad[0]!r}: a TGI option takes one plain value (it becomes a line of tgi.env)")
        _printable(v, "value")
        return {k.removeprefix("--"): val for k, val in v.items()}


class PackageSpec(Strict):
    """Per artifact: the weights, a model card (README.md), manifest.json of file hashes, serving/ configs."""

    @field_validator("quantized_by", "license", "tags")
    @classmethod
    def _plain(cls, v: Any, info: Any) -> Any:
        return _printable(v, info.field_name)

    enabled: bool = True
    quantized_by: str | None = Field(None, description="who made it (card metadata)")
    base_model: str | None = Field(
        None, description="Hub id of the unquantized model (default: the hub source, or what a GGUF source names)"
    )
    license: str | None = Field(None, description="license id for the card (default: the source's)")
    tags: list[str] = Field(default_factory=list, description="more Hub tags")
    serving: ServingSpec = Field(default_factory=ServingSpec)

    _repo_id = field_validator("base_model")(classmethod(lambda cls, v: _hub_repo_id(v)))


class PublishSpec(Strict):
    """Push each package to the Hub (huggingface_hub); the token comes from HF_TOKEN or the stored login."""

    enabled: bool = False
    repo_template: str = Field(
        "{org}/{model}-{format}",
        description="fields: {org}, {model} (base model name), {format} (artifact), {name} (recipe)",
    )
    gguf_repo: str | None = Field(
        "{org}/{model}-GGUF",
        description="one repo for every GGUF type of the model, a file per type (what llama-server -hf REPO:TYPE, "
        "ollama run hf.co/REPO:TYPE and the Hub's quant picker expect); null: a repo per GGUF artifact by "
        "repo_template",
    )
    org: str | None = Field(None, description="Hub user or organization")
    private: bool = True

    @model_validator(mode="after")
    def _template(self) -> PublishSpec:
        _repo_template("repo_template", self.repo_template, self.org)
        if self.gguf_repo is not None:
            _repo_template("gguf_repo", self.gguf_repo, self.org)
        for name, template in (("repo_template", self.repo_template), ("gguf_repo", self.gguf_repo or "")):
            if self.enabled and "{org}" in template and not self.org:
                raise ValueError(f"publish.org is needed by {name}'s {{org}}")
        return self


def _repo_template(name: str, template: str, org: str | None) -> None:
    """A repo template names a Hub repo from plain fields only: {org}, {model}, {format}, {name}."""
    fields = {"org": org or "ORG", "model": "m", "format": "f", "name": "n"}
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"{name} {template!r}: {e}") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        # Plain names only: str.format would follow "{org.__class__}" or "{org[0]}" into Python objects.
        if spec or conversion or not re.fullmatch(r"[a-z]+", field):
            raise ValueError(
                f"{name} {template!r}: {{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not allowed; use {{org}}, {{model}}, {{format}}, {{name}}"
            )
        if field not in fields:
            raise ValueError(
                f"{name} {template!r}: unknown field {field!r}; use {{org}}, {{model}}, {{format}}, {{name}}"
            )
    repo = template.format(**fields)
    if not HUB_REPO_RE.fullmatch(repo):
        raise ValueError(f"{name} {template!r} does not make a Hub repo id 'org/name'")


class LimitsSpec(Strict):
    """Refusals at `plan` from the cost estimates (pipeline.cost): a run that would take or write more."""

    max_hours: PositiveFloat | None = Field(None, description="refuse a run estimated to take longer (hours)")
    max_disk: str | None = Field(
        None,
        pattern=r"^[0-9]+(\.[0-9]+)?(MB|GB|TB|MiB|GiB|TiB)$",
        description="refuse a run that would write more, e.g. 50GB",
    )


TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class TaskSettings(Strict):
    """How an orchestrator (Airflow, Prefect) runs a stage's task; unset fields fall back to `default`."""

    retries: NonNegativeInt | None = Field(None, description="retries of a failed task (a retry reuses the cache)")
    retry_delay_s: NonNegativeInt | None = Field(None, description="seconds between retries")
    timeout_minutes: PositiveFloat | None = Field(None, description="the task fails after this long")
    queue: str | None = Field(None, pattern=TASK_NAME, description="Airflow queue (Celery workers that take it)")
    pool: str | None = Field(None, pattern=TASK_NAME, description="Airflow pool (limits tasks running at once)")


class OrchestrationSpec(Strict):
    """Task settings for orchestrators: `default` for every stage, `kinds` per stage kind on top of it, e.g.
    `kinds: {quantize: {queue: gpu, timeout_minutes: 240}, publish: {retries: 3}}`."""

    default: TaskSettings = Field(default_factory=lambda: TaskSettings(retries=1, retry_delay_s=30))
    kinds: dict[Kind, TaskSettings] = Field(default_factory=dict)

    def for_kind(self, kind: str) -> TaskSettings:
        given = self.kinds.get(Kind(kind))
        merged = {**self.default.model_dump(), **(given.model_dump(exclude_none=True) if given else {})}
        return TaskSettings(**merged)


class Recipe(Strict):
    name: str = Field(pattern=NAME_RE, description="run name; the run lives in <workdir>/<name>")
    model: ModelSource
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    formats: list[FormatEntry] = Field(min_length=1)  # type: ignore[name-defined]  # noqa: F821  (define_formats)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    package: PackageSpec = Field(default_factory=PackageSpec)
    publish: PublishSpec = Field(default_factory=PublishSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    orchestration: OrchestrationSpec = Field(default_factory=OrchestrationSpec)

    @field_validator("formats")
    @classmethod
    def _unique_artifacts(cls, v: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for entry in v:
            if entry.artifact in seen:
                raise ValueError(f"two formats produce the artifact {entry.artifact!r}; give one a distinct 'name'")
            seen.add(entry.artifact)
        return v


def define_formats(options: tuple[type[FormatOptions], ...]) -> None:
    """Complete `Recipe.formats` with the options of every registered format (the backends registry
    calls this once its backends are imported): until then, validating a Recipe raises pydantic's
    "not fully defined" error instead of accepting unknown formats."""
    entry = Annotated[Union[options], Field(discriminator="format")]  # type: ignore[valid-type]  # noqa: UP007 (a runtime tuple)
    globals()["FormatEntry"] = entry
    Recipe.model_rebuild(force=True, _types_namespace={"FormatEntry": entry})
