"""GGUF type: auto: the choice at a size budget (knapsack over measured per-tensor costs), the files
llama-quantize reads, and the recipe's budget options. The real model's figures: tests/test_demo_recipe.py."""

from __future__ import annotations

import itertools

import pytest

from pipeline.backends import gguf_auto
from pipeline.recipe import Recipe

TYPES = {"q2_K": 2.625, "q4_K": 4.5, "q6_K": 6.5625, "q8_0": 8.5}  # bits per weight


def _sensitivity(costs: dict[str, dict[str, float]], elements: int = 1000, other: int = 100) -> dict:
    """Tensors with `elements` weights each, one KLD cost per type; `other` bytes of tensors that stay as they are."""
    tensors = {
        n: {
            "kind": n.split(".")[-2] if "." in n else n,
            "elements": elements,
            "bytes": 2 * elements,
            "types": {t: {"bytes": int(TYPES[t] * elements / 8), "kld": k, "error": k} for t, k in c.items()},
        }
        for n, c in costs.items()
    }
    return {"tensors": tensors, "weights_bytes": other + sum(v["bytes"] for v in tensors.values())}


def _brute_force(sens: dict, budget: int) -> float:
    names = list(sens["tensors"])
    fixed = sens["weights_bytes"] - sum(v["bytes"] for v in sens["tensors"].values())
    best = float("inf")
    for combo in itertools.product(*(sens["tensors"][n]["types"].items() for n in names)):
        if fixed + sum(c["bytes"] for _, c in combo) <= budget:
            best = min(best, sum(c["kld"] for _, c in combo))
    return best


COSTS = {  # a sensitive tensor, a robust one, and one in between
    "blk.0.attn_v": {"q2_K": 0.50, "q4_K": 0.05, "q6_K": 0.010, "q8_0": 0.001},
    "blk.0.ffn_up": {"q2_K": 0.04, "q4_K": 0.01, "q6_K": 0.004, "q8_0": 0.001},
    "blk.1.ffn_down": {"q2_K": 0.20, "q4_K": 0.03, "q6_K": 0.008, "q8_0": 0.002},
}


@pytest.mark.parametrize("budget", [100 + 1000, 100 + 1500, 100 + 1900, 100 + 2400, 100 + 3200])
def test_choice_fits_the_budget_and_is_near_the_optimum(budget):
    sens = _sensitivity(COSTS)
    choice = gguf_auto.choose(sens, budget)
    assert choice["weights_bytes"] <= budget
    assert choice["weights_bytes"] == 100 + sum(
        sens["tensors"][n]["types"][t]["bytes"] for n, t in choice["types"].items()
    )
    assert choice["expected_kld"] == pytest.approx(sum(COSTS[n][t] for n, t in choice["types"].items()))
    optimum = _brute_force(sens, budget)
    assert choice["expected_kld"] <= optimum * 1.35 + 1e-9, (
        choice["types"],
        optimum,
    )  # greedy on the hull: near, not always at


def test_bytes_go_to_the_sensitive_tensor_first():
    choice = gguf_auto.choose(_sensitivity(COSTS), 100 + 328 * 2 + 820)  # one tensor at q6_K, two at q2_K
    assert choice["types"]["blk.0.attn_v"] != "q2_K" and choice["types"]["blk.0.ffn_up"] == "q2_K"


def test_types_that_are_dearer_and_no_better_are_never_chosen():
    costs = {"t": {"q2_K": 0.3, "q4_K": 0.1, "q6_K": 0.1, "q8_0": 0.1}}
    assert gguf_auto.choose(_sensitivity(costs), 10_000)["types"]["t"] == "q4_K"


def test_budget_below_the_cheapest_choice_is_refused():
    with pytest.raises(gguf_auto.BudgetError, match="over the budget"):
        gguf_auto.choose(_sensitivity(COSTS), 100 + 900)


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
