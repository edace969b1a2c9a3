"""What the source stage checks and reads before any heavy work, for `plan`: the source exists and is
what its name says (pipeline.checkpoints.filecheck), its weights are safetensors unless pickles are allowed, it
needs no remote code unless allowed, and its config.json (a local file, a GGUF's metadata, or one file
fetched from the Hub at the pinned commit) for the feasibility checks of the formats."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from pipeline.checkpoints import filecheck, gguf_header
from pipeline.errors import RecipeError
from pipeline.fingerprint import remembered
from pipeline.recipe import ModelSource, PackageFile

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
JSON_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
)


def package_file(ref: PackageFile) -> Path:
    """Locate a data file inside an installed package without importing it (its imports may be heavy)."""
    spec = importlib.util.find_spec(ref.package)
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(
            f"package {ref.package!r} is not installed (pip install {ref.package.replace('_', '-')})",
            field="model.gguf.package",
        )
    for root in spec.submodule_search_locations:
        candidate = Path(root) / ref.file
        if candidate.is_file():
            return candidate
    raise RecipeError(f"package {ref.package!r} ships no file {ref.file!r}", field="model.gguf.file")


def gguf_path(src: ModelSource) -> Path:
    path = package_file(src.gguf) if isinstance(src.gguf, PackageFile) else Path(src.gguf)
    if not path.is_file():
        raise RecipeError(f"GGUF file not found: {path}", field="model.gguf")
    return path


def check(src: ModelSource) -> None:
    """Raise RecipeError for a source that cannot work, before any heavy work starts."""
    if src.kind == "gguf":
        filecheck.check_gguf(gguf_path(src), "model.gguf")
    elif src.kind == "path":
        _check_local_dir(src)


def _check_local_dir(src: ModelSource) -> None:
    d = Path(src.path)
    if not d.is_dir():
        raise RecipeError(f"{d} is not a directory", field="model.path")
    if not (d / "config.json").is_file():
        raise RecipeError(f"{d} is not a HF checkpoint directory (no config.json)", field="model.path")
    check_weights([p.name for p in d.iterdir()], src, "model.path")
    for name in JSON_FILES:  # the files every later stage parses: broken ones fail here, not an hour in
        if (d / name).is_file():
            filecheck.check_json(d / name, "model.path")
    for f in sorted(d.glob("*.safetensors")):
        filecheck.check_safetensors(f, "model.path")
    tokenizer = (
        filecheck.read_json(d / "tokenizer_config.json", "model.path")
        if (d / "tokenizer_config.json").is_file()
        else None
    )
    check_remote_code(filecheck.read_json(d / "config.json", "model.path"), src, tokenizer)


def check_weights(names: list[str], src: ModelSource, field: str) -> None:
    if any(n.endswith(".safetensors") for n in names):
        return
    if any(n.endswith(PICKLE_SUFFIXES) for n in names):
        if src.allow_pickle:
            return
        raise RecipeError(
            "weights are pickle files (.bin/.pt), which can run code when loaded; set model.allow_pickle: "
            "true if you trust them",
            field=field,
        )
    raise RecipeError("no weights found (*.safetensors)", field=field)


def check_remote_code(config: dict[str, Any], src: ModelSource, tokenizer: dict[str, Any] | None = None) -> None:
    """A checkpoint whose model or tokenizer names its own Python code (auto_map) runs only with
    model.trust_remote_code: true. Without it, no `.py` file of the source is even copied into the run
    (pipeline.stages.source), so no tool we start (the llama.cpp converter asks transformers with
    trust_remote_code=True for some vocabularies) can import one."""
    if src.trust_remote_code:
        return
    for name, data in (("config.json", config), ("tokenizer_config.json", tokenizer or {})):
        code = data.get("auto_map") if isinstance(data, dict) else None
        if code:
            first = next(iter(code.values())) if isinstance(code, dict) else code
            first = first[0] if isinstance(first, list) and first else first
            raise RecipeError(
                f"this model needs its own Python code ({name} auto_map: {str(first)[:80]!r}); set "
                "model.trust_remote_code: true only if you trust it",
                field="model.trust_remote_code",
            )


def model_config(src: ModelSource) -> tuple[dict[str, Any] | None, str | None]:
    """(config.json of the source, or None; a note when it could not be had) for feasibility checks.

    Local and GGUF sources are read from disk (a GGUF's metadata once per file: remembered). For a
    Hub source only config.json (and tokenizer_config.json) at the pinned commit are fetched, into
    the HF cache; offline, the checks that need them are skipped and the note says so."""
    if src.kind == "path":
        return filecheck.read_json(Path(src.path) / "config.json", "model.path"), None
    if src.kind == "hub":
        return _hub_config(src)
    return remembered(gguf_path(src), "gguf-config-2", _gguf_config), None


def has_chat_template(src: ModelSource, config: dict[str, Any] | None) -> bool | None:
    """Whether the model's tokenizer has a chat template (None: not known before the source is fetched)."""
    if src.kind == "path":
        tok = Path(src.path) / "tokenizer_config.json"
        if (Path(src.path) / "chat_template.jinja").is_file():
            return True
        return bool(filecheck.read_json(tok, "model.path").get("chat_template")) if tok.is_file() else False
    if src.kind == "gguf":
        return isinstance(gguf_header.read(gguf_path(src)).fields.get("tokenizer.chat_template"), str)
    return (config or {}).get("_tokenizer_has_chat_template")


def _hub_config(src: ModelSource) -> tuple[dict[str, Any] | None, str | None]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{src.hub}@{src.revision[:12]}"
    try:
        # token=None: huggingface_hub reads HF_TOKEN or the stored login itself.
        config = filecheck.read_json(Path(hf_hub_download(src.hub, "config.json", revision=src.revision)), "model.hub")
        try:
            tokenizer = filecheck.read_json(
                Path(hf_hub_download(src.hub, "tokenizer_config.json", revision=src.revision)), "model.hub"
            )
            config["_tokenizer_has_chat_template"] = bool(tokenizer.get("chat_template"))
            check_remote_code(config, src, tokenizer)
        except (RemoteEntryNotFoundError, FileNotFoundError):  # no tokenizer config (or not cached, offline)
            pass
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as e:
        raise RecipeError(
            f"{where}: {type(e).__name__} (private or gated? log in or set HF_TOKEN)", field="model.hub"
        ) from None
    except RemoteEntryNotFoundError:  # LocalEntryNotFoundError (offline, not cached) is a note, below
        raise RecipeError(f"{where} has no config.json: not a transformers checkpoint", field="model.hub") from None
    except Exception as e:
        return None, (
            f"model.hub: config.json of {where} could not be fetched ({type(e).__name__}); the checks that need it "
            "(group size, context, architecture) are skipped until it can be"
        )
    check_remote_code(config, src)
    return config, None


def _gguf_config(path: Path) -> dict[str, Any]:
    header = gguf_header.read(path)
    f = header.fields
    arch = f.get("general.architecture")
    tokens = f.get("tokenizer.ggml.tokens")
    config = {
        "architecture": arch,
        "hidden_size": f.get(f"{arch}.embedding_length"),
        "intermediate_size": f.get(f"{arch}.feed_forward_length"),
        "max_position_embeddings": f.get(f"{arch}.context_length"),
        # the shapes the cost model needs (pipeline.cost.shapes), named as config.json names them
        "num_hidden_layers": f.get(f"{arch}.block_count"),
        "num_attention_heads": f.get(f"{arch}.attention.head_count"),
        "num_key_value_heads": f.get(f"{arch}.attention.head_count_kv"),
        "vocab_size": tokens.count if isinstance(tokens, gguf_header.GGUFArray) else None,
        "tie_word_embeddings": all(t.name != "output.weight" for t in header.tensors),
    }
    experts = f.get(f"{arch}.expert_count")
    if experts:
        config["num_experts"] = experts
        config["num_experts_per_tok"] = f.get(f"{arch}.expert_used_count")
        config["moe_intermediate_size"] = f.get(f"{arch}.expert_feed_forward_length")
    return config


def gguf_metadata(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """Some metadata values of a GGUF file, from its header (the weights are not read); remembered per file."""
    return remembered(path, "gguf-metadata:" + ",".join(keys), lambda p: _header_values(p, keys))


def _header_values(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    fields = gguf_header.read(path).fields
    return {k: None if isinstance(fields.get(k), gguf_header.GGUFArray) else fields.get(k) for k in keys}
