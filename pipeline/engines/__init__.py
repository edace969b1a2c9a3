"""Engines that run artifacts, behind one small interface, found by name.

An engine loads an artifact (or the base model), returns next-token log-probs for token windows (the
quality metrics), hands lm-eval a model over what it loaded, measures speed on it, and
names the unquantized form of the model it serves (its "floor", e.g. the F16 GGUF for llama.cpp).
Backends name the engine that serves their artifacts (`Backend.engine`). Adding an engine = one
module here with an `@register`ed subclass, plus its name in pipeline/registry.py.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline import registry


@dataclass(frozen=True)
class Settings:
    n_ctx: int = 2048  # longest sequence scored at once
    threads: int | None = None  # CPU threads (None: the engine's default)
    trust_remote_code: bool = False
    params: int | None = None  # parameters of the unquantized model: sizes a compressed artifact decompressed
    workdir: Path | None = None  # where an engine that runs a server keeps its log (the stage's output)


class Engine:
    name: ClassVar[str]
    title: ClassVar[str]  # for tables: "transformers", "llama.cpp"
    caveat: str | None = None  # what this load of the artifact does not measure (recorded with its metrics)
    runs_tasks: ClassVar[bool] = True  # lm-eval tasks run in it (else they are measured in the artifact's own engine)
    # The kind of stage whose output is the unquantized model in this engine's format (a backend's shared
    # step: "gguf-convert"), measured as the engine's floor; None: the engine runs the base model itself.
    floor: ClassVar[str | None] = None

    def __init__(self, path: Path, settings: Settings) -> None:
        raise NotImplementedError

    def logprobs(self, ids: list[int]) -> Any:
        """[len(ids), vocab] float32 log-probs of the next token after each position (or, from an engine
        that reports only its top-k, a pipeline.evaluation.metrics.TopLogprobs)."""
        raise NotImplementedError

    def weight_bytes(self) -> int:
        """Bytes of weights read per decoded token as this engine holds them (for the decode roofline)."""
        raise NotImplementedError

    def lm_eval_model(self) -> Any:
        """An lm-eval model over what this engine loaded (no second load)."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the model's memory."""

    def speed(self, prompt_ids: list[int], spec: Any) -> dict[str, Any]:
        """Prefill and decode speed on what this engine loaded (no second load: an 8B model in memory
        twice does not fit), repeated until settled (pipeline.evaluation.speed). Called last: an engine
        that measures with an outside tool lets go of its own copy first."""
        raise NotImplementedError

    @classmethod
    def refuses(cls, scheme: dict[str, Any] | None, cpu_flags: tuple[str, ...]) -> str | None:
        """Why this engine's CPU build cannot run an artifact of this compressed-tensors scheme on a CPU with these
        flags, where that is known without starting it (the plan prices such an evaluation as a refusal); None:
        it may. The serve check still starts the engine and records what it says."""
        return None

    @classmethod
    def floor_model(cls, stage_output: Path) -> Path:
        """The path this engine loads from the floor stage's output."""
        return stage_output


ENGINES: dict[str, type[Engine]] = {}


def register(cls: type[Engine]) -> type[Engine]:
    if cls.name in ENGINES:
        raise RuntimeError(f"engine {cls.name!r} registered twice")
    ENGINES[cls.name] = cls
    return cls


def get(name: str) -> type[Engine]:
    return ENGINES[name]


def log_softmax(logits: Any, chunk: int = 128) -> np.ndarray:
    """float32 log-softmax over the last axis, `chunk` rows at a time: a 128k vocabulary x 512
    positions is 256 MB in float32, and must not become a float64 copy."""
    import torch

    t = torch.as_tensor(logits)
    out = np.empty(tuple(t.shape), dtype=np.float32)
    for lo in range(0, t.shape[0], chunk):
        out[lo : lo + chunk] = torch.log_softmax(t[lo : lo + chunk].float(), dim=-1).numpy()
    return out


for _name in registry.ENGINES:  # registration: each engine module registers itself
    importlib.import_module(f"pipeline.engines.{_name}")
