"""Source stage: a Hub repo at a pinned commit, a local HF directory, or a GGUF file -> a local
HF checkpoint (safetensors, config.json, tokenizer, chat template) that transformers loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.checkpoints import gguf_tokenizer
from pipeline.checkpoints.sources import PICKLE_SUFFIXES, check_remote_code, check_weights, gguf_path
from pipeline.errors import StageError
from pipeline.files import MARKER, link_or_copy
from pipeline.fingerprint import ARGS, content_files, file_sha256, tree_digest
from pipeline.recipe import ModelSource
from pipeline.tools.hub_progress import status_bar

# 2: byte-level BPE tokenizer repaired (gguf_tokenizer); 3: tokenizer eos from the GGUF. Bump when the output of this
# stage changes for the same inputs; 4: a source's .py files only with trust_remote_code
VERSION = 4
KEEP = (
    "*.json",
    "*.safetensors",
    "*.jinja",
    "*.model",
    "*.tiktoken",
    "*.txt",
    "tokenizer*",
    "README.md",  # README: license for the card
    "LICENSE*",
    "USE_POLICY*",
    "NOTICE*",
)  # licenses that require a copy with every redistribution (Llama's does)


def config(src: ModelSource) -> dict[str, Any]:
    """The stage's config: what shapes the checkpoint (the source's content, not where it lies) and, unkeyed, the
    recipe's model section."""
    return {"version": VERSION, **keyed(src), ARGS: {"model": src.model_dump(mode="json")}}


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The source's content digests, read afresh (the mid-run guard)."""
    return keyed(ModelSource.model_validate(config[ARGS]["model"]))


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    return checkout(ModelSource.model_validate(config[ARGS]["model"]), out, ctx)


def keyed(src: ModelSource) -> dict[str, Any]:
    base = {
        "kind": src.kind,
        "dtype": src.dtype,
        "trust_remote_code": src.trust_remote_code,
        "allow_pickle": src.allow_pickle,
    }
    if src.kind == "hub":
        return {**base, "repo": src.hub, "revision": src.revision}
    if src.kind == "path":
        return {**base, "content": tree_digest(Path(src.path), skip=lambda rel: rel == MARKER)}
    path = gguf_path(src)
    return {**base, "gguf": path.name, "content": file_sha256(path)}


def checkout(src: ModelSource, out: Path, ctx: Any) -> dict[str, Any]:
    if src.kind == "gguf":
        info = _from_gguf(src, out, ctx)
    elif src.kind == "path":
        ctx.status(f"copying {src.path}")
        _copy_tree(Path(src.path), out, with_code=src.trust_remote_code)
        info = {"path": str(src.path)}
    else:
        info = _from_hub(src, out, ctx)
    _normalize(src, out, ctx)
    return info


def _copy_tree(src: Path, dst: Path, with_code: bool) -> None:
    """The user's checkpoint into the stage: weights hard-linked (never opened for writing by any
    stage), everything else copied, so that rewriting a config or tokenizer file here can never
    write through a link into the user's own files. Dot-directories (.git) are left out, and so are
    Python files unless the recipe trusts the model's code: what is not there cannot be imported.
    An HF cache snapshot holds symlinks to its blobs: os.link and copyfile follow them to the bytes."""
    for p in content_files(src):
        if p.suffix == ".py" and not with_code:
            continue
        target = dst / p.relative_to(src)
        if p.suffix == ".safetensors" or p.name.endswith(PICKLE_SUFFIXES):
            link_or_copy(p, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)


def _from_hub(src: ModelSource, out: Path, ctx: Any) -> dict[str, Any]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # The model's own code only when trusted, then at the pinned revision like everything else.
    patterns = (
        list(KEEP) + (["*.bin", "*.pt"] if src.allow_pickle else []) + (["*.py"] if src.trust_remote_code else [])
    )
    label = f"downloading {src.hub}@{src.revision[:12]}"
    ctx.status(label)
    try:
        # Into the HF cache, where every other tool finds it and a second run or recipe reuses it; token=None:
        # huggingface_hub reads HF_TOKEN or the stored login itself; we never touch it.
        snapshot = snapshot_download(
            src.hub, revision=src.revision, allow_patterns=patterns, tqdm_class=status_bar(ctx.status, label)
        )
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise StageError(
            f"{src.hub}@{src.revision}: {type(e).__name__} (private or gated? log in or set HF_TOKEN)"
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise StageError(
            f"cannot download {src.hub} from the Hub ({type(e).__name__}); check the network, "
            "or use a local path source"
        ) from None
    # weights hard-linked from the cache's blobs (copied across filesystems), the small files copied
    _copy_tree(Path(snapshot), out, with_code=src.trust_remote_code)
    config = json.loads((out / "config.json").read_text())
    check_remote_code(config, src)
    check_weights([p.name for p in out.iterdir()], src, "model.hub")
    return {"repo": src.hub, "revision": src.revision}


def _from_gguf(src: ModelSource, out: Path, ctx: Any) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(src)
    ctx.status(f"dequantizing {path.name} into a HF checkpoint")
    # Straight into the recipe's dtype: each tensor is dequantized and cast on its own, never a float32 copy of the
    # model.
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=getattr(torch, src.dtype))
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # The loaded model still carries the GGUF quantization config, and save_pretrained refuses it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    eos = model.generation_config.eos_token_id
    if isinstance(eos, int):  # transformers 5.17 sets the tokenizer's eos to the GGUF's bos; servers stop on it
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    repaired = gguf_tokenizer.repair(out, *gguf_tokenizer.gguf_vocab_kind(path))
    return {
        "gguf": str(path),
        "sha256": file_sha256(path),
        "architecture": type(model).__name__,
        "tokenizer_repaired": repaired,
    }


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
    model = AutoModelForCausalLM.from_pretrained(
        out, dtype=getattr(torch, src.dtype), trust_remote_code=src.trust_remote_code
    )
    for n in names:
        if n.endswith(PICKLE_SUFFIXES):
            (out / n).unlink()
    model.save_pretrained(out)
