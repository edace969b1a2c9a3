"""Repair of the HF tokenizer that transformers rebuilds from a GGUF file with a byte-level BPE vocab.

transformers (5.17) turns a GGUF "gpt2" tokenizer into a BPE with `byte_fallback` and a
SentencePiece-style decoder, and ignores `tokenizer.ggml.pre`, the pre-tokenizer llama.cpp uses.
The HF checkpoint then tokenizes digits differently from the GGUF it came from, and llama.cpp's own
converter mistakes it for a SentencePiece vocab (spaces then crash llama.cpp's tokenizer). Restoring
the byte-level decoder and the pre-tokenizer named in the GGUF gives back the original tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
# llama.cpp pre-tokenizer name -> the HF pre_tokenizer of the models that use it
PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "gpt-2": _BYTE_LEVEL,
    "default": _BYTE_LEVEL,
}


def repair(tokenizer_dir: Path, ggml_model: str | None, ggml_pre: str | None) -> bool:
    """Fix tokenizer.json in place for a byte-level BPE ("gpt2") GGUF vocab; True if it changed."""
    path = tokenizer_dir / "tokenizer.json"
    if ggml_model != "gpt2" or not path.is_file():
        return False
    data = json.loads(path.read_text())
    data["model"]["byte_fallback"] = False
    data["normalizer"] = None
    data["decoder"] = {**_BYTE_LEVEL, "add_prefix_space": True}
    if ggml_pre in PRE_TOKENIZERS:
        data["pre_tokenizer"] = PRE_TOKENIZERS[ggml_pre]
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2))
    return True


def gguf_vocab_kind(path: Path) -> tuple[str | None, str | None]:
    """(tokenizer.ggml.model, tokenizer.ggml.pre) of a GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    values = []
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre"):
        field = reader.get_field(key)
        values.append(None if field is None else field.contents())
    return values[0], values[1]
