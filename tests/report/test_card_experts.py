"""A mixture-of-experts card says how the calibration reached the experts: the rows every expert's
quantization statistics saw, the tokens the router sent each, and the experts it never sent any."""

from __future__ import annotations

from pipeline.report.card import _expert_calibration


def test_an_expert_never_routed_is_said_with_its_count():
    counts = {
        "min_calibrated_rows": 4096,
        "routed_tokens": {"0": [900, 0, 2100, 1096], "1": [1024, 1024, 1024, 1024]},
        "experts_never_routed": 1,
    }
    line = _expert_calibration(counts)
    assert "saw at least 4,096 token rows" in line
    assert "sent each expert 0 to 2,100 tokens (median 1,024)" in line
    assert "1 of 8 experts were never routed a calibration token" in line


def test_a_dense_artifact_or_an_uncalibrated_one_says_nothing():
    assert _expert_calibration(None) == "" and _expert_calibration({}) == ""
    line = _expert_calibration({"min_calibrated_rows": 64, "routed_tokens": {"0": [10, 22]}, "experts_never_routed": 0})
    assert line.endswith("every expert was routed tokens.\n")
