"""benchmarks/results/stats.py against known cases and scipy."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from benchmarks.results.stats import (
    bootstrap_mean,
    paired_bootstrap,
    t_interval,
    verdict,
    welch_interval,
)


def test_bootstrap_of_identical_predictions_is_zero_wide() -> None:
    correct = np.random.default_rng(1).integers(0, 2, 500)
    assert paired_bootstrap(correct, correct) == (0.0, 0.0, 0.0)


def test_bootstrap_is_paired_and_covers_the_difference() -> None:
    rng = np.random.default_rng(2)
    b = rng.random(2000) < 0.6
    a = b.copy()
    a[:100] = True   # A right on 100 more examples (at most), wrong on none B gets right
    diff, low, high = paired_bootstrap(a, b)
    assert diff == pytest.approx(100.0 * (a.mean() - b.mean()))
    assert 0 < low <= diff <= high
    # paired: A never worse, so no resample can make A worse than B
    assert low >= 0
    assert paired_bootstrap(b, a)[1:] == pytest.approx((-high, -low), abs=1e-9)


def test_bootstrap_interval_matches_the_binomial_width() -> None:
    correct = np.random.default_rng(3).random(4000) < 0.3
    acc, low, high = bootstrap_mean(correct, samples=4000)
    se = 100 * np.sqrt(correct.mean() * (1 - correct.mean()) / len(correct))
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert low < acc < high


def test_bootstrap_refuses_unpaired_input() -> None:
    with pytest.raises(ValueError, match="equal"):
        paired_bootstrap(np.ones(3), np.ones(4))


def test_t_interval_matches_scipy() -> None:
    values = [21.5, 22.2, 19.8, 23.0]
    mean, low, high = t_interval(values)
    expected = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                      scale=scipy_stats.sem(values))
    assert (low, high) == pytest.approx(expected)
    assert mean == pytest.approx(np.mean(values))
    with pytest.raises(ValueError, match="two"):
        t_interval([1.0])


def test_welch_interval_matches_scipy() -> None:
    a, b = [22.2, 25.0, 21.1], [21.5, 20.0, 23.9, 19.0]
    diff, low, high = welch_interval(a, b)
    result = scipy_stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high) == pytest.approx((ci.low, ci.high))


@pytest.mark.parametrize(("published", "low", "high", "expected"), [
    (0.7, 0.1, 2.0, "reproduced"), (-2.5, -3.0, -0.5, "reproduced"),
    (0.7, -2.0, -0.1, "contradicted"), (-2.5, 0.2, 1.0, "contradicted"),
    (0.7, -0.5, 1.5, "inconclusive"), (0.7, 0.0, 1.5, "inconclusive"),
    (0.0, 1.0, 2.0, "inconclusive")])
def test_verdict(published: float, low: float, high: float, expected: str) -> None:
    assert verdict(published, low, high) == expected
