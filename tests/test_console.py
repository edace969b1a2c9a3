"""The progress line's ETA: the estimate until the stage counts its own progress, then that."""

from __future__ import annotations

import time

from pipeline.console import Eta, human_time


def test_eta_follows_the_stage_own_count_once_it_reports_one():
    eta = Eta(600.0, time.perf_counter() - 100)  # estimated 10 min, 100 s in
    assert "ETA 8 min" in eta.line("loading")  # no count yet: what is left of the estimate
    # a quarter done after 100 s: 300 s left, whatever the estimate said
    assert "ETA 5 min" in eta.line("layer 6/24")
    assert "est. 10 min" in eta.line("layer 6/24")
    assert Eta(None, time.perf_counter()).line("layer 1/2") == ""  # no estimate: nothing shown


def test_human_time():
    assert [human_time(s) for s in (0.2, 42, 600, 9000, 4 * 86400)] == ["<1 s", "42 s", "10 min", "2.5 h", "4.0 days"]
