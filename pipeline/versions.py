"""Library versions, for cache keys and manifests."""

from __future__ import annotations

import functools
import importlib.metadata
import platform

import pipeline

REPORTED = (
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "huggingface_hub",
    "gguf",
    "llmcompressor",
    "compressed-tensors",
    "datasets",
    "pydantic",
)


@functools.cache  # every stage of a plan asks; each lookup scans site-packages
def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def versions(dists: tuple[str, ...] | list[str]) -> dict[str, str]:
    return {d: version_of(d) for d in dists}


def environment() -> dict[str, str]:
    return {
        "pipeline": pipeline.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions(REPORTED),
    }
