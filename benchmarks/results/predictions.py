"""How a probe's per-example predictions are named in its ``predictions.npz``: the probes write
them (:mod:`benchmarks.probes.probe`), the leaderboard reads them back for its intervals.
"""
from __future__ import annotations


def prediction_key(protocol: str, metric: str, seed: int | str) -> str:
    """The name of one run's predicted labels in ``predictions.npz``."""
    return f"pred.{protocol}.{metric}.seed{seed}"
