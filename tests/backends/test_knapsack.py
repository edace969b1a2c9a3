"""The choice of one type per tensor at a byte budget (knapsack over measured per-tensor costs), shared by
GGUF's and compressed-tensors' `type: auto`."""

from __future__ import annotations

import itertools

import pytest

from pipeline.backends import knapsack

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
    choice = knapsack.choose(sens, budget)
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
    choice = knapsack.choose(_sensitivity(COSTS), 100 + 328 * 2 + 820)  # one tensor at q6_K, two at q2_K
    assert choice["types"]["blk.0.attn_v"] != "q2_K" and choice["types"]["blk.0.ffn_up"] == "q2_K"


def test_types_that_are_dearer_and_no_better_are_never_chosen():
    costs = {"t": {"q2_K": 0.3, "q4_K": 0.1, "q6_K": 0.1, "q8_0": 0.1}}
    assert knapsack.choose(_sensitivity(costs), 10_000)["types"]["t"] == "q4_K"


def test_budget_below_the_cheapest_choice_is_refused():
    with pytest.raises(knapsack.BudgetError, match="over the budget"):
        knapsack.choose(_sensitivity(COSTS), 100 + 900)
