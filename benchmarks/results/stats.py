"""Uncertainty of the leaderboard's numbers: pure functions on arrays, no files.

- :func:`paired_bootstrap`: the 95% interval of a difference in accuracy between two backbones
  scored on the same test examples, from per-example correctness (Efron and Tibshirani 1993,
  percentile interval; the same resampled examples for both, so what the two share cancels). It
  needs one run each: the interval is over test examples, not over training runs.
- :func:`t_interval`: the 95% interval of a mean over seeds (Student's t).
- :func:`welch_interval`: the 95% interval of a difference of two means over independent seeds
  (Welch-Satterthwaite degrees of freedom), as ``scipy.stats.ttest_ind(equal_var=False)``.
- :func:`verdict`: reproduced / contradicted / inconclusive from an interval and a published
  difference.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

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


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL
                   ) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) for independent samples of unequal variance (Welch)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"Welch's interval needs at least two values per side, got {len(x)} "
                         f"and {len(y)}")
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(x.mean() - y.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, diff, diff
    from scipy import stats as _scipy

    dof = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1))
    half = _scipy.t.ppf(0.5 + level / 2, dof) * se
    return diff, diff - half, diff + half


VERDICTS = ("reproduced", "contradicted", "inconclusive")


def verdict(published: float, low: float, high: float) -> str:
    """``reproduced`` when the interval [low, high] excludes 0 on the published difference's side,
    ``contradicted`` when it excludes 0 on the other side, else ``inconclusive`` (also for a
    published difference of 0, which no interval can reproduce)."""
    if published == 0 or low <= 0 <= high:
        return "inconclusive"
    return "reproduced" if (low > 0) == (published > 0) else "contradicted"
