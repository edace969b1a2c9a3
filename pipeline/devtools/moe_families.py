"""Tiny random mixture-of-experts models of every family users quantize, from transformers' own config
classes (not the shape twins of pipeline.devtools.twins): 2 decoder layers (Llama 4: 4), 4 experts, hidden
64, each with its family's own layout: DeepSeek's and GLM's dense first layer and MLA, Granite's 3-D experts,
gpt-oss's fused experts with biases, DBRX's nested config, ERNIE's sparse-layer range, Llama 4's interleaved
dense and MoE layers. Head counts follow the real models where an engine relies on them (MHA for DeepSeek
and OLMoE). Random weights: compatibility only, never quality."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# The evaluation section for tiny random models: one short window in transformers or llama.cpp, no vLLM, no
# speed run, no quality gates (random weights: whether an artifact loads and is measured, not its quality)
EVALUATION = {
    "enabled": True,
    "vllm": False,
    "default_gates": False,
    "corpus": "embedded",
    "windows": 1,
    "context": 64,
    "speed": {"enabled": False},
}
CALIBRATION = {"source": "default", "samples": 4, "seq_len": 64}


def configs(vocab: int, bos: int | None = None, eos: int | None = None) -> dict[str, Callable[[], Any]]:
    import transformers as t

    base = dict(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=bos,
        eos_token_id=eos,
        tie_word_embeddings=False,
    )
    mha = {**base, "num_key_value_heads": 4}
    mla = dict(kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, n_group=1, topk_group=1)
    routed = dict(num_local_experts=4, num_experts_per_tok=2)
    return {
        "mixtral": lambda: t.MixtralConfig(**base, intermediate_size=128, **routed),
        "qwen2_moe": lambda: t.Qwen2MoeConfig(
            **base,
            intermediate_size=128,
            moe_intermediate_size=64,
            shared_expert_intermediate_size=128,
            num_experts=4,
            num_experts_per_tok=2,
        ),
        "qwen3_moe": lambda: t.Qwen3MoeConfig(
            **base, intermediate_size=128, moe_intermediate_size=64, num_experts=4, num_experts_per_tok=2, head_dim=16
        ),
        "olmoe": lambda: t.OlmoeConfig(**mha, intermediate_size=64, num_experts=4, num_experts_per_tok=2),
        "deepseek_v2": lambda: t.DeepseekV2Config(
            **mha,
            intermediate_size=128,
            moe_intermediate_size=64,
            n_routed_experts=4,
            n_shared_experts=1,
            num_experts_per_tok=2,
            first_k_dense_replace=1,
            q_lora_rank=None,
            **mla,
        ),
        "deepseek_v3": lambda: t.DeepseekV3Config(
            **mha,
            intermediate_size=128,
            moe_intermediate_size=64,
            n_routed_experts=4,
            n_shared_experts=1,
            num_experts_per_tok=2,
            first_k_dense_replace=1,
            q_lora_rank=32,
            **mla,
        ),
        "granitemoe": lambda: t.GraniteMoeConfig(**base, intermediate_size=64, **routed),
        "gpt_oss": lambda: t.GptOssConfig(
            **base,
            intermediate_size=64,
            head_dim=16,
            layer_types=["sliding_attention", "full_attention"],
            sliding_window=128,
            **routed,
        ),
        "phimoe": lambda: t.PhimoeConfig(**base, intermediate_size=128, **routed),
        "dbrx": lambda: t.DbrxConfig(
            d_model=64,
            n_heads=4,
            n_layers=2,
            max_seq_len=512,
            vocab_size=vocab,
            tie_word_embeddings=False,
            ffn_config={"moe_num_experts": 4, "moe_top_k": 2, "ffn_hidden_size": 128},
            attn_config={"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},  # as DBRX ships it
        ),
        "ernie4_5_moe": lambda: t.Ernie4_5_MoeConfig(
            **base,
            intermediate_size=128,
            moe_intermediate_size=64,
            moe_num_experts=4,
            moe_k=2,
            moe_layer_start_index=1,
            moe_num_shared_experts=1,
        ),
        "glm4_moe": lambda: t.Glm4MoeConfig(
            **base,
            intermediate_size=128,
            moe_intermediate_size=64,
            n_routed_experts=4,
            n_shared_experts=1,
            num_experts_per_tok=2,
            first_k_dense_replace=1,
            head_dim=16,
            n_group=1,
            topk_group=1,
        ),
        # 4 layers: Llama 4 skips RoPE on every 4th (NoPE), and llama.cpp's graph needs one such layer
        "llama4_text": lambda: t.Llama4TextConfig(
            **{**base, "num_hidden_layers": 4},
            intermediate_size=64,
            intermediate_size_mlp=128,
            num_local_experts=4,
            num_experts_per_tok=1,
            head_dim=16,
            interleave_moe_layer_step=2,
        ),
    }


FAMILIES = list(configs(8))


def meta_model(config: Any) -> Any:
    """The model as transformers builds it, on the meta device: its modules and shapes, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


# GLM's converter (llama.cpp) takes its bos, eot, unk and eom from these added tokens
GLM_SPECIAL = ["[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|observation|>", "<|endoftext|>"]


def _tokenizer(family: str, out: Path, cache: Path | None) -> dict[str, int]:
    """The tokenizer kind each family's converter expects: ERNIE's a SentencePiece model (tokenizer.model),
    GLM's a BPE with its added tokens, the rest SmolLM2's BPE (the twins' tokenizers, pipeline.devtools.twins).
    `cache`: a folder where SmolLM2's is made once and copied from (reading it from its GGUF takes seconds)."""
    import json
    import shutil

    from transformers import AutoTokenizer

    from pipeline.devtools.twins import _sentencepiece_tokenizer, _smollm2_tokenizer

    if family == "ernie4_5_moe":
        return _sentencepiece_tokenizer(out)
    if cache is None:
        facts = _smollm2_tokenizer(out)
    else:
        made = cache / "smollm2"
        if not (made / "facts.json").exists():
            made.mkdir(parents=True, exist_ok=True)
            (made / "facts.json").write_text(json.dumps(_smollm2_tokenizer(made)))
        for f in made.iterdir():
            if f.name != "facts.json":
                shutil.copy(f, out / f.name)
        facts = json.loads((made / "facts.json").read_text())
    if family == "glm4_moe":
        tok = AutoTokenizer.from_pretrained(out)
        tok.add_special_tokens({"additional_special_tokens": GLM_SPECIAL})
        tok.save_pretrained(out)
        facts["size"] = len(tok)
    return facts


def build(family: str, out: Path, tokenizer_cache: Path | None = None) -> Path:
    """Save a random `family` model into `out` with the kind of tokenizer its family has."""
    import torch
    from transformers import AutoModelForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(family, out, tokenizer_cache)
    torch.manual_seed(0)
    config = configs(tok["size"], tok["bos"], tok["eos"])[family]()
    AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(out)
    return out
