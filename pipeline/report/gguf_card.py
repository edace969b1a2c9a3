"""The card (README.md) of a model's one GGUF repo: every type beside the others, a file each, with its
size and its evaluation against the base model, and the commands that pull one type from the Hub.
Built from the packages' manifests (pipeline.stages.package), one per GGUF artifact."""

from __future__ import annotations

from typing import Any

from pipeline.evaluation import results
from pipeline.report.card import PROJECT, gguf_tag
from pipeline.report.hub_usage import gguf


def render(repo: str, model: str, entries: list[tuple[dict[str, Any], list[str]]]) -> str:
    """`entries`: (package manifest, the file names its weights have in the repo) per GGUF artifact."""
    from huggingface_hub import ModelCardData

    first = entries[0][0]
    base = first.get("base_model")
    used = list(dict.fromkeys(d for m, _ in entries for d in m.get("datasets") or []))
    data = ModelCardData(
        license=first.get("license"),
        **({"datasets": used} if used else {}),
        library_name="gguf",
        pipeline_tag="text-generation",
        tags=["gguf", "quantized", PROJECT, "llama.cpp"],
        **({"base_model": base, "base_model_relation": "quantized"} if base else {}),
    )
    of = f"[{base}](https://huggingface.co/{base})" if base else model
    parts = [
        f"---\n{data.to_yaml()}\n---\n",
        f"# {model} GGUF\n",
        f"GGUF files of {of} for llama.cpp and Ollama, one per quantization type, made with {PROJECT}.\n",
        "| file | type | GB |\n|---|---|---|\n"
        + "\n".join(
            f"| {name} | {m['description']} | {_bytes(m, name, files) / 1e9:.2f} |"
            for m, files in entries
            for name in files
        )
        + "\n",
        _evaluation(entries),
        "## Use it\n",
    ]
    for m, files in entries:
        tag = gguf_tag(files[0])
        parts.append(f"### {m['artifact']}\n\n" + gguf(repo, tag or "", files[0], tag is not None))
    parts.append(
        "Each type's own model card, serving files and file hashes are in `packages/<type>/` of the run that "
        "made them; `manifests/<type>.json` here holds each type's recipe, library versions and sha256 of every file.\n"
    )
    return "\n".join(parts)


def _bytes(manifest: dict[str, Any], name: str, files: list[str]) -> int:
    weights = sorted(f for f in manifest["files"] if f.endswith(".gguf"))
    return manifest["files"][weights[files.index(name)]]["size"] if len(weights) == len(files) else 0


def _evaluation(entries: list[tuple[dict[str, Any], list[str]]]) -> str:
    evaluated = [m for m, _ in entries if m.get("evaluation")]
    if not evaluated:
        return "## Evaluation\n\nNot evaluated: the recipe's `evaluation.enabled` was false.\n"
    table = [results.row("base", "unquantized", evaluated[0]["evaluation"]["base"], "-")]
    floor = evaluated[0]["evaluation"].get("floor")
    if floor:
        table.append(results.row(f"floor: {floor['engine']}", "unquantized, in this engine", floor, "-"))
    table += [results.row(m["artifact"], m["description"], m["evaluation"]["artifact"], "passed") for m in evaluated]
    return "## Evaluation\n\nAgainst the unquantized model on held-out text:\n\n" + results.markdown(table)
