"""Estimates learn from this machine's finished stages (pipeline.cost.history)."""

from __future__ import annotations

from pipeline.cost import history
from pipeline.cost.model import Estimate


def test_a_group_measured_twice_as_slow_is_estimated_twice_as_slow(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PIPELINE_CACHE", str(tmp_path))
    prior = Estimate(100.0, 1000.0, 0)
    for seconds in (190.0, 200.0, 230.0):  # median ratio 2.0
        history.record("m", "v1:quantize:gptq:float32", 10**9, prior, seconds, 1200.0)
    history.record("m", "v1:quantize:awq:float32", 10**9, prior, 50.0, 900.0)  # another group: no say
    past = history.corrections("m")
    got = history.corrected(prior, "v1:quantize:gptq:float32", past, 10**9)
    assert got.seconds == 200.0 and got.peak_rss_mb == 1200.0 and got.corrected_by == 3
    assert history.corrected(prior, "v1:quantize:fp8:float32", past, 10**9) == prior  # never measured: the prior


def test_runs_of_a_similar_size_outweigh_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PIPELINE_CACHE", str(tmp_path))
    prior = Estimate(10.0, 100.0, 0)
    history.record("m", "g", 135 * 10**6, prior, 40.0, 100.0)  # a small model: start-up dominates, 4x
    history.record("m", "g", 8 * 10**9, prior, 12.0, 100.0)  # an 8B one: 1.2x
    past = history.corrections("m")
    assert history.corrected(prior, "g", past, 7 * 10**9).seconds == 12.0
    assert history.corrected(prior, "g", past, 100 * 10**6).seconds == 40.0


def test_a_torn_line_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PIPELINE_CACHE", str(tmp_path))
    history.record("m", "g", 10**9, Estimate(10.0, 100.0, 0), 20.0, 100.0)
    with open(history.path("m"), "a") as f:
        f.write('{"group": "g", "prior_s"')  # a run killed mid-write
    assert len(history.corrections("m")["g"]) == 1
