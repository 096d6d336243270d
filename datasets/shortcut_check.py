"""Measure the shortcut in a Colorful-MNIST layout: is the background easier than the digit?

    python datasets/shortcut_check.py --root DIR [--features pixels|random_resnet18|supervised]
                                      [--n-train N] [--n-test N] [--seconds S] [--json FILE]

DIR is a Colorful-MNIST folder (``train.csv``, ``test.csv``, images) or a suite data root holding
``colorful_mnist/``. Features:

- ``pixels``: logistic regression on raw pixels (downsampled to ``--pixels-size``), one probe per
  label; the quick check CI runs.
- ``random_resnet18``: logistic regression on the pooled features of a randomly initialised
  torchvision ResNet-18 (no training).
- ``supervised``: a small ConvNet (CALIBRATION.md's 6-layer encoder) trained for ``--seconds`` of
  CPU time on each label alone; its test accuracy is that label's supervised ceiling.

Prints one line per label (test top-1 accuracy in %) and optionally writes them as JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from pretrain.backbones import build_resnet
from pretrain.data import ColorfulMNIST

LABELS = ("digit", "background")


def load_arrays(root: Path, split: str, n: int | None, size: int | None
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first ``n`` images of ``split`` as uint8 (N, H, W, 3), resized to ``size`` if given."""
    ds = ColorfulMNIST(root, split)
    idx = range(min(n or len(ds), len(ds)))
    images, labels = [], {k: [] for k in LABELS}
    for i in idx:
        img, lab = ds[i]
        images.append(np.asarray(img.resize((size, size)) if size else img))
        for k in LABELS:
            labels[k].append(lab[k])
    return np.stack(images), {k: np.array(v) for k, v in labels.items()}


def probe(train_x: np.ndarray, train_y: dict, test_x: np.ndarray, test_y: dict) -> dict:
    """Test accuracy (%) of a logistic-regression probe per label (the keys of ``train_y``)."""
    scaler = StandardScaler().fit(train_x)
    train_x, test_x = scaler.transform(train_x), scaler.transform(test_x)
    out = {}
    for k in train_y:
        clf = LogisticRegression(max_iter=300, C=0.1).fit(train_x, train_y[k])
        out[k] = 100.0 * float((clf.predict(test_x) == test_y[k]).mean())
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.25


@torch.no_grad()
def random_resnet18_features(images: np.ndarray, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    model = build_resnet("resnet18", "imagenet").eval()
    x = to_tensor(images)
    return torch.cat([model(x[i:i + 256]) for i in range(0, len(x), 256)]).numpy()


def small_convnet(n_classes: int) -> nn.Module:
    """The 6-layer ConvNet of CALIBRATION.md (32-32-pool-64-64-pool-128-128, BN, avg-pool)."""
    layers, c_in = [], 3
    for i, c in enumerate((32, 32, 64, 64, 128, 128)):
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        if i in (1, 3):
            layers.append(nn.MaxPool2d(2))
        c_in = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, n_classes))


def supervised(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
               seconds: float, seed: int) -> tuple[float, int]:
    """Train the small ConvNet on one label for ``seconds``; (test accuracy %, epochs run)."""
    torch.manual_seed(seed)
    model = small_convnet(10)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = to_tensor(train_x), torch.from_numpy(train_y).long()
    start, epochs = time.process_time(), 0
    while time.process_time() - start < seconds:
        model.train()
        for batch in torch.randperm(len(x)).split(128):
            # random translation by up to 4 px, the only augmentation
            dx, dy = np.random.randint(-4, 5, 2)
            xb = torch.roll(x[batch], shifts=(int(dy), int(dx)), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(xb), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if time.process_time() - start >= seconds:
                break
        epochs += 1
    model.eval()
    with torch.no_grad():
        xt = to_tensor(test_x)
        pred = torch.cat([model(xt[i:i + 512]).argmax(1) for i in range(0, len(xt), 512)])
    return 100.0 * float((pred.numpy() == test_y).mean()), epochs


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--features", choices=("pixels", "random_resnet18", "supervised"),
                    default="pixels")
    ap.add_argument("--n-train", type=int, default=None, help="first N train images (all)")
    ap.add_argument("--n-test", type=int, default=None, help="first N test images (all)")
    ap.add_argument("--pixels-size", type=int, default=32, help="side for the pixel probe")
    ap.add_argument("--seconds", type=float, default=60.0, help="CPU seconds per supervised run")
    ap.add_argument("--labels", nargs="+", choices=LABELS, default=list(LABELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the accuracies here")
    args = ap.parse_args(argv)

    t0 = time.time()
    size = args.pixels_size if args.features == "pixels" else None
    train_x, train_y = load_arrays(args.root, "train", args.n_train, size)
    test_x, test_y = load_arrays(args.root, "test", args.n_test, size)
    result: dict = {"features": args.features, "n_train": len(train_x), "n_test": len(test_x)}
    if args.features == "supervised":
        for k in args.labels:
            acc, epochs = supervised(train_x, train_y[k], test_x, test_y[k], args.seconds,
                                     args.seed)
            result[k], result[f"{k}_epochs"] = acc, epochs
    else:
        if args.features == "pixels":
            feats = [a.reshape(len(a), -1).astype(np.float32) for a in (train_x, test_x)]
        else:
            feats = [random_resnet18_features(a, args.seed) for a in (train_x, test_x)]
        result.update(probe(feats[0], train_y, feats[1], test_y))
    result["seconds"] = round(time.time() - t0, 1)
    for k in (k for k in LABELS if k in result):
        print(f"{args.features}: {k} accuracy {result[k]:.1f}% "
              f"({result['n_train']} train / {result['n_test']} test images)")
    print(f"took {result['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
