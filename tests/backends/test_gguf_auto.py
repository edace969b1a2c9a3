"""GGUF type: auto: the files llama-quantize reads and the recipe's budget options (the choice itself:
tests/backends/test_knapsack.py). The real model's figures: tests/test_demo_recipe.py."""

from __future__ import annotations

import pytest

from pipeline.backends import gguf_auto
from pipeline.recipe import Recipe


def test_type_file_anchors_every_tensor(tmp_path):
    path = gguf_auto.type_file(
        {"types": {"blk.1.attn_q.weight": "q5_0", "blk.11.attn_q.weight": "iq4_nl"}}, tmp_path / "t.txt"
    )
    assert (
        path.read_text() == "^blk\\.1\\.attn_q\\.weight$=q5_0\n^blk\\.11\\.attn_q\\.weight$=iq4_nl\n"
    )  # blk.1 must not match blk.11


def test_dry_run_size_is_parsed():
    lines = [
        "llama_model_quantize_impl: model size  =   256.63 MiB (16.00 BPW)",
        "llama_model_quantize_impl: quant size  =    98.87 MiB (6.17 BPW)",
    ]
    assert gguf_auto.dry_run_bytes(lines) == int(98.87 * 1024 * 1024)
    with pytest.raises(ValueError):
        gguf_auto.dry_run_bytes(["nothing"])


def _gguf(entry: dict):
    return Recipe.model_validate(
        {"name": "t", "model": {"path": "/tmp"}, "formats": [{"format": "gguf", **entry}]}
    ).formats[0]


def test_auto_names_its_budget():
    assert _gguf({"type": "auto", "like": "Q4_K_M"}).artifact == "gguf-auto-q4_k_m"
    assert _gguf({"type": "auto", "target_bpw": 4.85}).artifact == "gguf-auto-4.85bpw"
    assert _gguf({"type": "auto", "target_size": "105MB"}).artifact == "gguf-auto-105mb"


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "auto"},
        {"type": "auto", "like": "Q4_K_M", "target_bpw": 4.5},
        {"type": "Q4_K_M", "like": "Q2_K"},
        {"type": "auto", "target_size": "105"},
    ],
)
def test_budget_options_must_match_the_type(entry):
    with pytest.raises(ValueError):
        _gguf(entry)
