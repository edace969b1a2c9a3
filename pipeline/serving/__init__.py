"""Serving targets behind one small interface, found by name: each writes the files under an
artifact's `serving/` directory and the usage section of its model card.

Adding a target = one new module here (a `ServingTarget` subclass with `@register`) plus its name
in pipeline/registry.py. Which targets an artifact gets follows from `serves()`: what can load it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pipeline import registry


@dataclass(frozen=True)
class Experts:
    """A mixture-of-experts artifact: what expert-offload and expert-parallel options and the card need."""

    total_params: int  # of the unquantized model, counted from its files
    active_params: int  # per token: all but the routed experts it is not sent to
    count: int  # routed experts per layer
    per_token: int  # top-k
    bytes_per_layer: dict[int, int]  # the routed experts' bytes in this artifact, by layer index
    other_bytes: int  # every other tensor of the artifact: what stays on a GPU when the experts go to RAM
    calibration: dict[str, Any] | None = None  # tokens per expert while calibrating (pipeline.backends.expert_counts)

    @property
    def bytes(self) -> int:
        return sum(self.bytes_per_layer.values())


@dataclass(frozen=True)
class Artifact:
    """What a serving config needs to know about one packaged artifact."""

    name: str  # artifact name: directory, k8s object names
    kind: str  # what it is on disk (Backend.kind: "compressed-tensors", "gguf"): targets decide on it, not on formats
    description: str  # "awq: INT4 g64 / A16 (compressed-tensors)"
    served_model_name: str
    max_model_len: int
    size_bytes: int
    gguf_file: str | None = None  # first (or only) file of a GGUF artifact
    gguf_shards: int = 0
    bnb_quantize: str | None = None  # TGI's --quantize value for a bitsandbytes scheme
    base_model: str | None = None  # Hub id of the unquantized model, when known
    repo_id: str | None = None  # Hub repo the package is published to, when publishing
    repo_file: str | None = None  # the GGUF file's name in that repo (the model's GGUF repo renames it)
    chat_template: str | None = None  # Jinja chat template of the model
    special_tokens: dict[str, str] = field(default_factory=dict)  # bos_token / eos_token strings for the template
    options: dict[str, Any] = field(default_factory=dict)  # the recipe's package.serving section
    experts: Experts | None = None  # set for mixture-of-experts models
    kv_cache_dtype: str | None = None  # "fp8": the checkpoint holds calibrated KV-cache scales


class ServingTarget:
    name: ClassVar[str]
    title: ClassVar[str]  # shown in the card: "vLLM"
    api_path: ClassVar[str] = "/v1"  # where its OpenAI-compatible API lives

    def experimental(self, a: Artifact) -> bool:
        return False

    def serves(self, a: Artifact) -> bool:
        raise NotImplementedError

    def files(self, a: Artifact) -> dict[str, str]:
        """Relative path under serving/ -> file text."""
        raise NotImplementedError

    def usage(self, a: Artifact) -> str:
        """Markdown for the model card: how to start it from the package directory."""
        raise NotImplementedError


TARGETS: dict[str, ServingTarget] = {}


def register(cls: type[ServingTarget]) -> type[ServingTarget]:
    if cls.name in TARGETS:
        raise RuntimeError(f"serving target {cls.name!r} registered twice")
    TARGETS[cls.name] = cls()
    return cls


def targets_for(a: Artifact, wanted: list[str] | None = None) -> list[ServingTarget]:
    """The targets that can serve `a`, limited to `wanted` (recipe package.serving.targets) when given."""
    return [t for name, t in TARGETS.items() if (wanted is None or name in wanted) and t.serves(a)]


def write(a: Artifact, out: Path, wanted: list[str] | None = None) -> list[str]:
    """Write every applicable target's files under out/serving/; return the target names."""
    chosen = targets_for(a, wanted)
    for target in chosen:
        for rel, text in target.files(a).items():
            path = out / "serving" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if rel.endswith(".sh"):
                path.chmod(0o755)
    return [t.name for t in chosen]


class ShellVar(str):
    """A fragment of our own that the shell expands ('"${PORT:-8080}"', '"$PWD"'): the one kind of
    argument shell_script writes as it is. It is a type, never recognised by its text, so a recipe value
    that looks like one ('"$(touch /tmp/x)"' in tgi_args) is still quoted."""


def shell_script(comment: str, command: list[str], cd_package: bool = True) -> str:
    """A bash script that runs `command` from the package directory; ShellVar arguments expand, every
    other one (recipe values included) is quoted, so it reaches the program as one literal argument."""
    import shlex

    def arg(s: str) -> str:
        return s if isinstance(s, ShellVar) else shlex.quote(s)

    lines = ["#!/usr/bin/env bash"] + [f"# {c}" if c else "#" for c in comment.splitlines()] + ["set -euo pipefail"]
    if cd_package:
        lines.append('cd "${MODEL_DIR:-$(dirname "$0")/..}"  # the package directory: weights, README.md, serving/')
    groups: list[list[str]] = []
    for c in command:  # one "--option value" per line
        if groups and groups[-1][0].startswith("-") and len(groups[-1]) == 1 and not str(c).startswith("-"):
            groups[-1].append(c)
        else:
            groups.append([c])
    body = " \\\n  ".join(" ".join(arg(c) for c in g) for g in groups)
    return "\n".join(lines) + f"\nexec {body}\n"


# Registration, in pipeline.registry's order: the order of the card's usage sections, the recommended server first.
for _name in registry.TARGETS:
    importlib.import_module(f"pipeline.serving.{_name}")
