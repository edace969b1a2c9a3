"""Tensor headers: which weights an artifact leaves as floats and the experts' bytes per layer, read from
files the real libraries write (safetensors, gguf), never from weights loaded."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import save_file

from pipeline.checkpoints import tensors


def _compressed_moe(path):
    """A compressed-tensors-style MoE layer: packed INT4 experts with scales, a BF16 router, norms, FP8 attention."""
    t = {
        "model.embed_tokens.weight": torch.zeros(32, 8, dtype=torch.bfloat16),
        "model.layers.0.input_layernorm.weight": torch.ones(8, dtype=torch.bfloat16),
        "model.layers.0.self_attn.q_proj.weight": torch.zeros(8, 8).to(torch.float8_e4m3fn),
        "model.layers.0.self_attn.q_proj.weight_scale": torch.ones(8, 1, dtype=torch.bfloat16),
        "model.layers.0.mlp.gate.weight": torch.zeros(2, 8, dtype=torch.bfloat16),
        "lm_head.weight": torch.zeros(32, 8, dtype=torch.bfloat16),
    }
    for layer in (0, 1):
        for e in (0, 1):
            p = f"model.layers.{layer}.mlp.experts.{e}.down_proj"
            t[f"{p}.weight_packed"] = torch.zeros(8, 2, dtype=torch.int32)
            t[f"{p}.weight_scale"] = torch.ones(8, 1, dtype=torch.bfloat16)
            t[f"{p}.weight_shape"] = torch.tensor([8, 16])
    save_file(t, str(path / "model.safetensors"))


def test_float_weights_without_quantization_data_are_the_unquantized_ones(tmp_path):
    _compressed_moe(tmp_path)
    stored = tensors.read(tmp_path)
    names = {t.name for t in tensors.unquantized(stored)}
    assert names == {
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.mlp.gate.weight",
        "lm_head.weight",
    }
    roles = {g.pattern: g.role for g in tensors.grouped(tensors.unquantized(stored))}
    assert roles["model.layers.*.mlp.gate.weight"] == "router"
    assert roles["lm_head.weight"] == "output head" and roles["model.embed_tokens.weight"] == "token embedding"
    experts = next(g for g in tensors.grouped(tensors.weights(stored)) if "experts" in g.pattern)
    assert experts.pattern == "model.layers.*.mlp.experts.*.down_proj.weight_packed" and experts.count == 4


def test_expert_bytes_per_layer_count_the_experts_and_their_scales(tmp_path):
    _compressed_moe(tmp_path)
    per_layer = tensors.expert_bytes_per_layer(tensors.read(tmp_path))
    one_expert = 8 * 2 * 4 + 8 * 2 + 2 * 8  # packed int32, bf16 scale, int64 shape
    assert per_layer == {0: 2 * one_expert, 1: 2 * one_expert}


def test_gguf_types_come_from_the_file(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_tensor("blk.0.ffn_gate_inp.weight", np.zeros((4, 32), dtype=np.float32))
    q8 = gguf.quants.quantize(np.ones((4, 32), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.ffn_down_exps.weight", q8, raw_shape=q8.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    stored = tensors.read(tmp_path)
    assert [t.name for t in tensors.unquantized(stored)] == ["blk.0.ffn_gate_inp.weight"]
    assert tensors.expert_bytes_per_layer(stored) == {0: q8.nbytes}
    assert tensors.role("blk.0.ffn_gate_inp.weight") == "router"
