"""benchmarks/results/stats.py against known cases and scipy."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from benchmarks.results.stats import (
    NOISE_FACTOR,
    Difference,
    bootstrap_mean,
    examples_variance,
    fcr_level,
    paired_bootstrap,
    seed_difference,
    t_interval,
    verdict,
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


def test_seed_difference_without_test_variance_is_welchs_t() -> None:
    a, b = [22.2, 25.0, 21.1], [21.5, 20.0, 23.9, 19.0]
    found = seed_difference(a, b)
    result = scipy_stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(0.95)
    assert found.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert found.interval() == pytest.approx((ci.low, ci.high))
    assert found.p_value() == pytest.approx(result.pvalue)
    with pytest.raises(ValueError, match="two seeds per side"):
        seed_difference([1.0, 2.0], [3.0])


def test_examples_variance_is_the_paired_bootstraps() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.random(3000) < 0.62, rng.random(3000) < 0.55
    _, low, high = paired_bootstrap(a, b, samples=4000)
    assert 2 * 1.96 * np.sqrt(examples_variance(a, b)) == pytest.approx(high - low, rel=0.1)
    # folded in: a wider interval than the seeds' spread alone
    seeds = ([60.0, 61.0, 62.0], [58.0, 59.0, 60.5])
    assert seed_difference(*seeds, test_variance=4.0).se > seed_difference(*seeds).se


def _correct(accuracies: list[float], rng: np.random.Generator, n: int = 2000) -> np.ndarray:
    return np.stack([rng.random(n) < acc / 100 for acc in accuracies])


def test_seed_dominated_case_one_run_excludes_zero_seeds_do_not() -> None:
    """Two sides of the same recipe: what differs is only the pretraining seed. Side A's
    accuracies are the three MoCo v2 seeds of issue #25 (66.2 / 62.2 / 55.0), side B three more
    draws of the same spread. One run per side looks decisive; the seeds are not."""
    rng = np.random.default_rng(5)
    seeds_a, seeds_b = [66.2, 62.2, 55.0], [58.4, 64.1, 60.3]
    a, b = _correct(seeds_a, rng), _correct(seeds_b, rng)
    one_run, low, high = paired_bootstrap(a[0], b[0])
    assert low > 0 and one_run > 5   # the one-run test-set interval "excludes 0"
    measured_a, measured_b = 100 * a.mean(axis=1), 100 * b.mean(axis=1)
    over_seeds = seed_difference(measured_a, measured_b, examples_variance(a, b))
    s_low, s_high = over_seeds.interval()
    assert s_low < 0 < s_high and over_seeds.p_value() > 0.05
    assert s_high - s_low > 3 * (high - low)  # seed noise dominates the width
    published = 10.0  # a claim of +10 points: not decided either way by these seeds
    assert verdict(published, low, high, noise=1.0, seeds=1, published_recipe=True) == "one run"
    assert verdict(published, s_low, s_high, noise=1.0, seeds=3,
                   published_recipe=True) == "inconclusive"


def test_fcr_level_follows_benjamini_hochberg() -> None:
    level, selected = fcr_level([0.001, 0.02, 0.04, 0.5])
    # BH-adjusted: 0.004, 0.04, 0.053, 0.5 -> two selected; intervals at 1 - 2 * 0.05 / 4
    assert selected == [True, True, False, False] and level == pytest.approx(0.975)
    assert fcr_level([0.3, 0.6]) == (pytest.approx(1 - 0.05 / 2), [False, False])
    assert fcr_level([]) == (0.95, [])
    # the adjusted interval excludes 0 exactly for the selected claims
    diffs = [Difference(d, 1.0, 8.0) for d in (6.0, 4.0, 3.5, 1.0, -5.0)]
    level, selected = fcr_level([d.p_value() for d in diffs])
    excludes = [not (lo <= 0 <= hi) for lo, hi in (d.interval(level) for d in diffs)]
    assert excludes == selected and selected.count(True) not in (0, len(diffs))


@pytest.mark.parametrize(("published", "low", "high", "seeds", "recipe", "expected"), [
    (10.0, 5.0, 15.0, 3, True, "reproduced"),
    (-10.0, -15.0, -5.0, 2, True, "reproduced"),
    (10.0, 5.0, 15.0, 3, False, "direction reproduced"),   # not the published recipe
    (72.6, 8.0, 17.7, 3, True, "direction reproduced"),   # +12.85 measured against +72.6
    (10.0, -15.0, -5.0, 3, True, "contradicted"),
    (-10.0, 1.0, 3.0, 3, False, "contradicted"),
    (10.0, -1.0, 15.0, 3, True, "inconclusive"),           # holds the published size and 0
    (10.0, 0.0, 15.0, 3, True, "inconclusive"),
    (10.0, None, None, 3, True, "inconclusive"),
    (10.0, 5.0, 15.0, 1, True, "one run"),
    (-2.0, -3.0, -1.0, 3, True, "not testable"),           # RCL's background, default noise
    (-0.7, -3.0, -1.0, 1, True, "not testable"),
    (0.0, 1.0, 2.0, 3, True, "not testable")])
def test_verdict(published: float, low: float | None, high: float | None, seeds: int,
                 recipe: bool, expected: str) -> None:
    assert verdict(published, low, high, noise=1.0, seeds=seeds,
                   published_recipe=recipe) == expected


def test_noise_threshold_is_two_single_runs_95_percent_range() -> None:
    assert NOISE_FACTOR == pytest.approx(2.77, abs=0.01)
    assert verdict(0.6, 0.5, 0.7, noise=0.2, seeds=3, published_recipe=True) == "reproduced"
    assert verdict(0.5, 0.4, 0.6, noise=0.2, seeds=3, published_recipe=True) == "not testable"


def test_over_three_seeds_welch_covers_and_a_seed_bootstrap_does_not() -> None:
    """Why the interval over seeds is Welch's and not a hierarchical bootstrap: 3 pretraining
    seeds a side, no true difference, seed std 5 points plus the test set's noise (2000 examples
    near 60%). Welch's 95% interval with the test-set variance covers 0 about 95% of the time;
    the percentile bootstrap over seeds about 80% (here: 0.958 and 0.800)."""
    rng = np.random.default_rng(0)
    runs, n, boots = 400, 3, 1000
    test_variance = 2 * 0.24 / 2000 * 1e4 / n
    welch = boot = 0
    for _ in range(runs):
        measured = 60 + 5 * rng.standard_normal((2, n)) + np.sqrt(
            0.24 / 2000) * 100 * rng.standard_normal((2, n))
        low, high = seed_difference(*measured, test_variance).interval()
        welch += low <= 0 <= high
        picks = rng.integers(0, n, size=(boots, 2, n))
        means = np.take_along_axis(np.broadcast_to(measured, (boots, 2, n)), picks, 2).mean(2)
        b_low, b_high = np.percentile(means[:, 0] - means[:, 1], [2.5, 97.5])
        boot += b_low <= 0 <= b_high
    assert welch / runs > 0.93 and boot / runs < 0.87
