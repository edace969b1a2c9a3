"""The sensitivity stage's statistics (backends/gguf_sensitivity.py) that do not need llama.cpp: the standard
error a row-sampled error estimate carries. Its probes and ladder run on real files in tests/backends/test_gguf.py,
tests/backends/test_moe.py and tests/test_demo_recipe.py."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.backends import gguf_sensitivity


@pytest.mark.parametrize("rows, kept", [(4096, 256), (14336, 73), (1024, 900)])
def test_row_sample_standard_error_is_the_spread_of_repeated_samples(rows, kept):
    """Rows' errors as uneven as real weights' (a few outlier rows carry much of the error): the standard error
    one sample reports agrees with how far the estimates of 2000 independent samples actually spread."""
    rng = np.random.default_rng(0)
    population = rng.lognormal(0.0, 1.0, rows)
    truth = population.sum()
    estimates, reported = [], []
    for _ in range(2000):
        sample = population[rng.choice(rows, kept, replace=False)]
        estimates.append(sample.sum() * rows / kept)
        reported.append(gguf_sensitivity._rel_se(sample, kept / rows))
    spread = np.std(estimates) / truth
    assert abs(np.mean(estimates) / truth - 1) < 0.01  # unbiased
    assert np.median(reported) == pytest.approx(spread, rel=0.15), (np.median(reported), spread)


def test_a_whole_tensor_has_no_sampling_error():
    errors = np.random.default_rng(1).lognormal(0.0, 1.0, 512)
    assert gguf_sensitivity._rel_se(errors, 1.0) == 0.0
    assert gguf_sensitivity._rel_se(errors[:1], 0.5) == 0.0  # one row: no spread to read
