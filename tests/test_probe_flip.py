"""Fine-tuning flips images horizontally except where a mirror changes the label: Colorful-MNIST's
digits (benchmarks/probes/colorful_mnist.py's task says so; benchmarks/probes/probe.py builds the
transform)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torchvision.transforms as T

from benchmarks.probes import probe
from benchmarks.probes.colorful_mnist import TASK as COLORFUL_MNIST
from benchmarks.probes.config import ProbeTask
from benchmarks.probes.fairface import TASK as FAIRFACE


class _Stop(Exception):
    pass


def _finetune_transform(task: ProbeTask, data: Path, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> tuple[T.Compose, bool]:
    """The transform of the data set the task's fine-tuning trains on, and the recipe's flag."""
    seen = {}

    def capture(model, dataset, classes, device, recipe, *args, **kwargs):
        seen["transform"], seen["hflip"] = dataset.transform, recipe.hflip
        raise _Stop

    monkeypatch.setattr(probe, "finetune", capture)
    with pytest.raises(_Stop):
        probe.run_task(task, ["--weights", "random", "--arch", "resnet18", "--data", str(data),
                              "--protocol", "finetune", "--out", str(tmp_path / task.name),
                              "--leaderboard", str(tmp_path / "board.csv")])
    return seen["transform"], seen["hflip"]


def _flips(transform: T.Compose) -> bool:
    return any(isinstance(t, T.RandomHorizontalFlip) for t in transform.transforms)


def test_colorful_mnist_finetunes_without_flip_fairface_with(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transform, hflip = _finetune_transform(COLORFUL_MNIST, tiny_data / "colorful_mnist",
                                           tmp_path, monkeypatch)
    assert not hflip and not _flips(transform)
    assert any(isinstance(t, T.RandomCrop) for t in transform.transforms)  # still augments
    transform, hflip = _finetune_transform(FAIRFACE, tiny_data / "fairface", tmp_path,
                                           monkeypatch)
    assert hflip and _flips(transform)
