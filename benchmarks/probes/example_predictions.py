"""The per-example predictions of one probe run, written as ``predictions.npz`` in its folder
(read back as a hostile file by :mod:`benchmarks.results.predictions`)."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.results.predictions import prediction_key
from pretrain.files import atomic_write

PREDICTIONS_FILE = "predictions.npz"


@dataclass
class Predictions:
    """The per-example predictions of one run, saved as ``predictions.npz`` in its folder: predicted
    labels per (protocol, metric, seed), the true labels per metric, and ``test_set``, a hash of
    the test data's root and labels, so that two backbones scored on the same test set are paired
    example by example (benchmarks/results/stats.py)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    roots: set[str] = field(default_factory=set)

    def add(self, protocol: str, seed: int, predicted: dict[str, torch.Tensor],
            labels: dict[str, torch.Tensor], root: Path, metric: str = "{}_top1") -> None:
        """Record ``predicted`` (attribute -> labels) of ``protocol`` and ``seed``; the metric of
        an attribute is ``metric.format(attribute)``."""
        self.roots.add(str(Path(root).resolve()))
        for attr, p in predicted.items():
            name = metric.format(attr)
            self.arrays[prediction_key(protocol, name, seed)] = p.cpu().numpy().astype(np.int64)
            self.arrays[f"labels.{name}"] = labels[attr].cpu().numpy().astype(np.int64)

    def test_set(self) -> str:
        digest = hashlib.sha256("\n".join(sorted(self.roots)).encode())
        for name in sorted(k for k in self.arrays if k.startswith("labels.")):
            digest.update(name.encode() + self.arrays[name].tobytes())
        return digest.hexdigest()[:16]

    def save(self, path: Path) -> Path | None:
        if not self.arrays:
            return None
        buffer = io.BytesIO()
        np.savez_compressed(buffer, test_set=np.array(self.test_set()), **self.arrays)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
        return path
