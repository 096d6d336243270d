"""Uncertainty of the leaderboard's numbers and the verdicts on the papers' claims: pure
functions on arrays, no files.

- :func:`paired_bootstrap`: the interval of a difference in accuracy between two backbones scored
  on the same test examples, from per-example correctness (Efron and Tibshirani 1993, percentile
  interval; the same resampled examples for both, so what the two share cancels). It needs one run
  each and is over test examples only: it says whether these two trained backbones differ on this
  test set, not whether another pretraining seed would.
- :func:`t_interval`: the interval of a mean over seeds (Student's t).
- :func:`seed_difference`: a claim's difference over pretraining seeds (Welch-Satterthwaite, as
  ``scipy.stats.ttest_ind(equal_var=False)``) with the test set's sampling variance folded in
  (:func:`examples_variance`), its p-value and its interval at any level.
- :func:`fcr_level`: the confidence level of one report's family of claims after
  Benjamini-Hochberg selection (false coverage rate, Benjamini and Yekutieli 2005).
- :func:`verdict`: size and sign of a published difference against a measured interval.

Why Welch over per-seed means rather than a hierarchical bootstrap (resample seeds, then test
examples within each): a claim has two to five pretraining seeds per side, and a bootstrap over
three seeds has at most ten distinct resampled means a side and no small-sample correction, so its
percentile interval is too narrow exactly where seed noise dominates. Simulated with 3 seeds a
side, no true difference and a seed std of 5 points (tests/test_stats.py, 400 runs), the
bootstrap's 95% interval covers 0 in 80.0% of runs (mean width 12.1 points), Welch's with the
test-set variance in 95.8% (24.2): Welch's interval pays for few seeds through the t quantile at
the Welch-Satterthwaite degrees of freedom. The seeds share one test set, so the
spread of per-seed means holds the seed noise but not the test set's own sampling noise; that is
added as the variance of the seed-averaged per-example difference over the test examples (a
term with as many degrees of freedom as examples, i.e. none lost in the Satterthwaite sum).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
BOOTSTRAP_SAMPLES = 2000


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """(difference, low, high) of accuracy A minus accuracy B in percent, with the percentile
    interval of ``samples`` resamplings of the test examples (one index set for both)."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired bootstrap needs two equal, non-empty 1-d arrays of per-example "
                         f"correctness; got shapes {a.shape} and {b.shape}")
    delta = 100.0 * (a - b)
    idx = np.random.default_rng(seed).integers(0, len(delta), size=(samples, len(delta)))
    means = delta[idx].mean(axis=1)
    tail = 100.0 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(delta.mean()), float(low), float(high)


def bootstrap_mean(correct: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                   level: float = LEVEL) -> tuple[float, float, float]:
    """(accuracy %, low, high): the percentile interval of one accuracy over test examples."""
    correct = np.asarray(correct, dtype=np.float64)
    return paired_bootstrap(correct, np.zeros_like(correct), samples, seed, level)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of ``values`` (at least two) with Student's t."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        raise ValueError(f"a t-interval needs at least two values, got {len(x)}")
    from scipy import stats as _scipy  # slow to import: only where needed

    mean = float(x.mean())
    half = _scipy.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - half, mean + half


# A published difference no larger than the run-to-run noise of the paper's own numbers cannot be
# tested: two single runs with per-run std s differ by more than 1.96 * sqrt(2) * s only one time
# in twenty when nothing differs.
NOISE_FACTOR = 1.96 * math.sqrt(2.0)

VERDICTS = ("reproduced", "direction reproduced", "contradicted", "inconclusive", "not testable",
            "one run")


@dataclass(frozen=True)
class Difference:
    """A measured difference (points) with its standard error and degrees of freedom."""

    diff: float
    se: float
    dof: float

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """The two-sided ``level`` interval (t with :attr:`dof` degrees of freedom)."""
        if self.se == 0.0:
            return self.diff, self.diff
        from scipy import stats as _scipy

        half = float(_scipy.t.ppf(0.5 + level / 2, self.dof)) * self.se
        return self.diff - half, self.diff + half

    def p_value(self) -> float:
        """Two-sided p-value of "no difference"."""
        if self.se == 0.0:
            return 1.0 if self.diff == 0.0 else 0.0
        from scipy import stats as _scipy

        return float(2 * _scipy.t.sf(abs(self.diff) / self.se, self.dof))


def examples_variance(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Variance (points squared) over test examples of the difference between the seed-averaged
    accuracies of two sides, from per-example correctness of shape (seeds, examples) on one test
    set (the seeds of a side may differ in number)."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    if a.shape[1] != b.shape[1] or a.shape[1] < 2:
        raise ValueError(f"the test-set variance needs both sides scored on one test set of at "
                         f"least two examples; got {a.shape[1]} and {b.shape[1]} examples")
    delta = 100.0 * (a.mean(axis=0) - b.mean(axis=0))
    return float(delta.var(ddof=1) / len(delta))


def seed_difference(a: Sequence[float], b: Sequence[float], test_variance: float = 0.0
                    ) -> Difference:
    """mean(a) - mean(b) over pretraining seeds (one value per seed, at least two per side) with
    Welch's standard error, ``test_variance`` (:func:`examples_variance`) added to it."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"an interval over seeds needs at least two seeds per side, got "
                         f"{len(x)} and {len(y)}")
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se2 = va + vb + test_variance
    denominator = va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1)
    dof = se2 ** 2 / denominator if denominator > 0 else math.inf
    return Difference(float(x.mean() - y.mean()), math.sqrt(se2), dof)


def fcr_level(p_values: Sequence[float], q: float = 1 - LEVEL) -> tuple[float, list[bool]]:
    """(confidence level, selected) for one family of claims: Benjamini-Hochberg at false
    discovery rate ``q`` selects R of the m claims, and every interval of the family is drawn at
    level 1 - R q / m (1 - q / m when none is selected), which keeps the false coverage rate
    among the selected claims at ``q`` (Benjamini and Yekutieli 2005). A claim's interval then
    excludes 0 exactly when Benjamini-Hochberg selects it."""
    if not len(p_values):
        return LEVEL, []
    from scipy import stats as _scipy

    adjusted = _scipy.false_discovery_control(np.asarray(p_values, dtype=np.float64))
    selected = [bool(p <= q) for p in adjusted]
    return 1 - max(sum(selected), 1) * q / len(p_values), selected


def within_noise(published: float, noise: float) -> bool:
    """Whether a published difference is inside its paper's own run-to-run noise (``noise``: the
    std of one published number, :data:`NOISE_FACTOR`)."""
    return abs(published) < NOISE_FACTOR * noise


def verdict(published: float, low: float | None, high: float | None, *, noise: float,
            seeds: int, published_recipe: bool) -> str:
    """The verdict on a published difference given the measured interval [low, high].

    In order: ``not testable`` when the published difference is inside the paper's own noise
    (:func:`within_noise`: no measurement can confirm it); ``one run`` when a side has fewer than
    two pretraining seeds (``seeds``: the smaller count; a test-set interval says nothing about
    another seed); ``inconclusive`` without an interval; ``contradicted`` when the interval
    excludes 0 on the other side; when it excludes 0 on the published side, ``reproduced`` if the
    row ran the published recipe (``published_recipe``: budget ``full``, same recipe) and the
    published difference lies in the interval, else ``direction reproduced``; otherwise
    ``inconclusive`` (an interval holding 0 supports no size, even one holding the published
    difference).
    """
    if within_noise(published, noise):
        return "not testable"
    if seeds < 2:
        return "one run"
    if low is None or high is None or low <= 0 <= high:
        return "inconclusive"
    if (low > 0) != (published > 0):
        return "contradicted"
    if published_recipe and low <= published <= high:
        return "reproduced"
    return "direction reproduced"
