"""A quantized checkpoint with a NaN or infinite scale fails its stage; finite ones pass."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pipeline.checkpoints.scale_check import finite_scales, nonfinite_scales
from pipeline.errors import StageError


def _checkpoint(path, scale):
    tensors = {
        "model.layers.0.mlp.experts.3.down_proj.weight_packed": torch.zeros(4, 2, dtype=torch.int32),
        "model.layers.0.mlp.experts.3.down_proj.weight_scale": scale,
        "model.layers.0.mlp.experts.3.down_proj.weight_zero_point": torch.zeros(4, 1, dtype=torch.int8),
        "model.norm.weight": torch.full((4,), float("nan")),  # not a scale: never judged here
    }
    save_file(tensors, str(path / "model.safetensors"))
    return path


def test_finite_scales_pass(tmp_path):
    finite_scales(_checkpoint(tmp_path, torch.ones(4, 1)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nonfinite_scale_fails_naming_the_tensor(tmp_path, bad):
    scale = torch.ones(4, 1)
    scale[2, 0] = bad
    path = _checkpoint(tmp_path, scale)
    assert nonfinite_scales(path) == ["model.layers.0.mlp.experts.3.down_proj.weight_scale"]
    with pytest.raises(StageError, match="experts.3.down_proj.weight_scale"):
        finite_scales(path)
