"""Mixture-of-experts checkpoint facts: an artifact's experts get back the architecture's own tensor
names after llm-compressor's linearization renamed them (Mixtral's w1/w3/w2), shard by shard."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pipeline.checkpoints import moe


def _linearized(path, block):
    """What llm-compressor 0.14 saves for a linearized MoE layer: gate/up/down_proj per expert."""
    t = {f"model.layers.0.{block}.gate.weight": torch.zeros(2, 4)}
    for e in (0, 1):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            t[f"model.layers.0.{block}.experts.{e}.{proj}.weight_packed"] = torch.full((2, 2), e, dtype=torch.int32)
            t[f"model.layers.0.{block}.experts.{e}.{proj}.weight_scale"] = torch.ones(2, 1)
    t["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(4, 4)
    save_file(t, str(path / "model-00001-of-00001.safetensors"), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: "model-00001-of-00001.safetensors" for k in t}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def _names(path):
    with safe_open(str(next(path.glob("*.safetensors"))), "pt") as f:
        return set(f.keys())


def test_mixtral_experts_get_their_checkpoint_names_back(tmp_path):
    _linearized(tmp_path, "block_sparse_moe")
    assert moe.restore_expert_names(tmp_path, {"model_type": "mixtral"}) == 12
    names = _names(tmp_path)
    for e in (0, 1):
        for proj in ("w1", "w3", "w2"):
            assert f"model.layers.0.block_sparse_moe.experts.{e}.{proj}.weight_packed" in names
    assert not [n for n in names if "_proj.weight_" in n and "experts" in n]
    assert "model.layers.0.self_attn.q_proj.weight" in names  # attention keeps its names
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(index) == names
    with safe_open(str(next(tmp_path.glob("*.safetensors"))), "pt") as f:  # the right tensor under each name
        assert f.get_tensor("model.layers.0.block_sparse_moe.experts.1.w2.weight_packed").eq(1).all()
        assert f.metadata() == {"format": "pt"}


def test_architectures_named_like_the_linearization_are_left_alone(tmp_path):
    _linearized(tmp_path, "mlp")
    before = (tmp_path / "model-00001-of-00001.safetensors").stat().st_mtime_ns
    assert moe.restore_expert_names(tmp_path, {"model_type": "qwen3_moe"}) == 0
    assert moe.restore_expert_names(tmp_path, {"model_type": "llama"}) == 0
    assert (tmp_path / "model-00001-of-00001.safetensors").stat().st_mtime_ns == before
