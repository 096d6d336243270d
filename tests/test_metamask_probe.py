"""MetaMask scored as its paper scores it: the probes' kNN of a MetaMask backbone runs on its
features times the mask saved with it (the official code's kNN on h (x) M), the plain kNN is
reported beside it, and ``--feature-mask off`` gives the plain kNN only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.probes.features import Features, masked_features
from pretrain.backbones import build_resnet
from pretrain.checkpoint import save_backbone
from pretrain.open_backbone import open_backbone


def _metamask_checkpoint(path: Path) -> tuple[Path, torch.Tensor]:
    torch.manual_seed(0)
    mask = torch.rand(512, generator=torch.Generator().manual_seed(3))
    mask[::2] = 0.0  # half the dimensions masked out: the masked kNN is another kNN
    save_backbone(path, build_resnet("resnet18", "imagenet").state_dict(),
                  {"method": "simclr", "regularizer": "metamask", "arch": "resnet18",
                   "stem": "imagenet", "feature_mask": [float(v) for v in mask]})
    return path, mask


def test_masked_features_multiply_by_the_saved_mask(tmp_path: Path) -> None:
    path, mask = _metamask_checkpoint(tmp_path / "metamask.safetensors")
    backbone = open_backbone(path)
    features = Features(torch.randn(4, 512), {"digit": torch.arange(4)})
    masked = masked_features(features, backbone)
    torch.testing.assert_close(masked.x, features.x * mask)
    assert masked.labels is features.labels
    assert masked_features(features, open_backbone("random")) is None


def test_the_probe_scores_knn_on_the_masked_features(tmp_path: Path, tiny_data: Path) -> None:
    from benchmarks.probes import colorful_mnist

    path, _ = _metamask_checkpoint(tmp_path / "metamask.safetensors")
    results = {}
    for option in ("on", "off"):
        out = tmp_path / f"run-{option}"
        assert colorful_mnist.main(
            lambda argv: colorful_mnist.run_task(colorful_mnist.TASK, argv),
            ["--weights", str(path), "--linear-epochs", "1", "--data",
             str(tiny_data / "colorful_mnist"), "--out", str(out), "--leaderboard",
             str(tmp_path / f"board-{option}.csv"), "--cache-dir", str(tmp_path / "cache"),
             "--device", "cpu", "--feature-mask", option]) == 0
        assert json.loads((out / "config.json").read_text())["feature_mask"] == option
        with np.load(out / "predictions.npz") as saved:
            results[option] = {k: saved[k] for k in saved if k.startswith("pred.knn")}
    on, off = results["on"], results["off"]
    assert set(off) == {k for k in on if "_unmasked" not in k}
    for key, predicted in off.items():  # the plain kNN, under its own name when masked
        np.testing.assert_array_equal(on[key.replace("pred.knn5", "pred.knn5_unmasked")
                                         .replace("pred.knn200", "pred.knn200_unmasked")],
                                      predicted)
    assert any((on[key] != off[key]).any() for key in off)  # the mask changes the neighbours
