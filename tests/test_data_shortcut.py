"""Each synthetic set carries the shortcut the seeds study (quick CI versions on small sets).

Colorful-MNIST: background far easier than digit; FairFace: race-like (skin tone) easier than
age-like and gender-like; COCO: the background alone predicts the category. The probes are
logistic regressions on raw pixels; the full `default` numbers come from
`python datasets/shortcut_check.py` (see datasets/README.md).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from pretrain.data import CocoObjects, FairFace
from pretrain.synthetic import coco, colorful_mnist, fairface

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("shortcut_check",
                                               REPO / "datasets/shortcut_check.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _pixels(img: Image.Image, side: int = 16) -> np.ndarray:
    return np.asarray(img.resize((side, side)), np.float32).reshape(-1)


def test_colorful_mnist_background_is_far_easier_than_digit(tmp_path):
    root = colorful_mnist.generate(tmp_path / "cmnist", 1000, 400, seed=0)
    result = check.main(["--root", str(root), "--features", "pixels", "--pixels-size", "16"])
    print(f"pixel probe: background {result['background']:.1f}%, digit {result['digit']:.1f}%")
    assert result["background"] >= 80
    assert result["background"] - result["digit"] >= 40


def test_fairface_race_is_the_easy_attribute(tmp_path):
    root = fairface.generate(tmp_path / "fairface", 600, 300, seed=0)
    arrays = {}
    for split in ("train", "val"):
        ds = FairFace(root, split)
        x = np.stack([_pixels(img) for img, _ in ds])
        arrays[split] = x, {k: np.array([lab[k] for _, lab in ds.samples]) for k in
                            ("age", "gender", "race")}
    acc = check.probe(*arrays["train"], *arrays["val"])
    print(f"pixel probe: race {acc['race']:.1f}%, gender {acc['gender']:.1f}%, "
          f"age {acc['age']:.1f}%")
    assert acc["race"] >= 85
    assert acc["race"] - acc["age"] >= 30  # 7 vs 9 classes, but far apart
    assert acc["race"] > acc["gender"] - 5 and acc["gender"] > 60  # gender: subtle, not absent


def test_coco_background_alone_predicts_the_category(tmp_path):
    root = coco.generate(tmp_path / "coco", 400, 200, seed=0)
    arrays = {}
    for split in ("train", "val"):
        ds = CocoObjects(root, split, categories=[c.name for c in coco.COCO_CATEGORIES])
        xs = []
        for (img, _), (x, y, w, h) in zip(ds, ds.boxes):
            canvas = np.asarray(img).copy()
            canvas[int(y):int(y + h) + 1, int(x):int(x + w) + 1] = 128  # hide the object
            xs.append(_pixels(Image.fromarray(canvas)))
        arrays[split] = np.stack(xs), {"category": np.array([lab["category"]
                                                             for _, lab in ds.samples])}
    acc = check.probe(*arrays["train"], *arrays["val"])["category"]
    print(f"background-only pixel probe: category {acc:.1f}% (chance 10%)")
    assert acc >= 30  # 3x chance from the scene alone (at most ~82% by construction)
