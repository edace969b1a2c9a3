"""Quality gates: layering, family defaults, and messages that name the gate, the value and the limit."""

from __future__ import annotations

from pipeline.evaluation import gates
from pipeline.evaluation.gates import GatesSpec

METRICS = {"kld": 0.08, "ppl_increase_pct": 7.5, "top1_pct": 88.0}


def test_failures_name_gate_value_and_limit():
    assert gates.failures(METRICS, GatesSpec(max_kld=0.05, max_ppl_increase_pct=5, min_top1=90)) == [
        "max_kld: mean KLD 0.08 > 0.05",
        "max_ppl_increase_pct: perplexity +7.50 % > 5.0 %",
        "min_top1: top-1 agreement 88.00 % < 90.0 %",
    ]
    assert gates.failures(METRICS, GatesSpec(max_kld=0.1, min_top1=85)) == []


def test_a_nan_or_missing_metric_fails_its_gate():
    """A broken artifact's NaN compares False with every limit: it must trip the gate, not pass it."""
    nan = {"kld": float("nan"), "ppl_increase_pct": float("inf"), "top1_pct": None}
    found = gates.failures(nan, GatesSpec(max_kld=0.05, max_ppl_increase_pct=5, min_top1=90))
    assert [f.split(":")[0] for f in found] == ["max_kld", "max_ppl_increase_pct", "min_top1"]
    assert "kld is nan, not a finite number" in found[0]
    assert gates.failures(nan, GatesSpec()) == [], "no gate, nothing to trip"


def test_most_specific_gate_wins_per_limit():
    merged = gates.resolve(
        GatesSpec(max_kld=0.2), GatesSpec(max_kld=0.05, min_top1=90), GatesSpec(max_ppl_increase_pct=9)
    )
    assert merged == GatesSpec(max_kld=0.2, min_top1=90, max_ppl_increase_pct=9)


def test_family_defaults():
    eight_bit = gates.defaults("fp8", {"format": "fp8"})
    q2 = gates.defaults("gguf", {"format": "gguf", "type": "Q2_K"})
    q4 = gates.defaults("gguf", {"format": "gguf", "type": "Q4_K_M"})
    assert eight_bit.max_kld < q4.max_kld < q2.max_kld
    assert gates.defaults("gptq", {"format": "gptq", "bits": 8}) == eight_bit
