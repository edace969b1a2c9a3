"""The tensors every token computes with in a mixture of experts, by name in each format: attention,
shared experts and the MLPs of dense layers. A token reaches only its top-k routed experts, so these weigh
more in its output than any one expert, and they are a small share of the bytes: keeping them at 8 bits
while the routed experts go to 4 or lower costs little size (the recipe option `always_active`)."""

from __future__ import annotations

# llama.cpp's GGUF names (llama-quantize --tensor-type: a regex searched in the name; the router,
# ffn_gate_inp, and norms are never quantized): attention of every kind (MHA, MLA's attn_q_a/attn_kv_b),
# shared experts (_shexp), dense layers' FFN (ffn_gate.weight, where experts are ffn_gate_exps.weight)
GGUF = (r"attn_", r"_shexp\.", r"ffn_(gate|up|down)\.weight")

# transformers' module names (compressed-tensors targets): attention, shared experts (Qwen's shared_expert,
# DeepSeek's shared_experts, Llama 4's feed_forward.shared_expert) and a dense layer's MLP (DeepSeek's first
# layers, Llama 4's interleaved ones); experts are `mlp.experts.N.*_proj` after llm-compressor linearizes them
HF = (
    r"re:.*self_attn\..*_proj$",
    r"re:.*shared_experts?\..*_proj$",
    r"re:.*(mlp|feed_forward)\.(gate|up|down)_proj$",
)
