"""The Colorful-MNIST-like set (RCL's shortcut benchmark), in ``pretrain.data.ColorfulMNIST``'s
layout: ``{train,test}/*.png`` and ``{train,test}.csv`` (file, digit, background).

Real handwriting (scikit-learn's bundled 8x8 digits, separate source digits for train and test)
upscaled, jittered and drawn bright on one of 10 procedural background classes. Each background
class has its own pattern *and* colour family, so the background is the easy, dominant cue; digits
are large and high-contrast over a low-contrast texture, so a supervised model can still learn
them (the digit ceiling: with full-contrast textures even supervised models could not learn the
digits, as measured when the set was calibrated).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from pretrain.synthetic.common import hsv, pattern, write_csv

IMAGES = {"tiny": (40, 20), "default": (6000, 2000)}  # train, test images per size
CMNIST_SIZE = 64
BACKGROUND_CLASSES = ("stripes_0", "stripes_45", "stripes_90", "stripes_135", "checkerboard",
                      "rings", "gradient", "blobs", "noise", "dots")
N_TRAIN_SOURCE_DIGITS = 1400  # of scikit-learn's 1,797; the remaining 397 only appear in test


def cmnist_background(kind: int, rng: np.random.Generator, size: int = CMNIST_SIZE,
                      contrast: tuple[float, float] = (0.12, 0.22)) -> np.ndarray:
    """A low-contrast (size, size, 3) texture of class ``kind`` in its own colour family.

    The hue family (36 degrees per class, +-10 jitter) and the pattern both identify the class;
    the value contrast is kept low so the bright digit on top stays legible.
    """
    hue = kind / len(BACKGROUND_CLASSES) + rng.uniform(-0.028, 0.028)
    sat = rng.uniform(0.35, 0.65)
    v0, delta = rng.uniform(0.3, 0.5), rng.uniform(*contrast)
    c1, c2 = hsv(hue, sat, v0 - delta / 2), hsv(hue, sat, v0 + delta / 2)
    p = pattern(kind, size, size, rng)[..., None]
    return c1 * (1 - p) + c2 * p


def _digit_mask(digit8: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Upscale an 8x8 digit (values 0-16), jitter it, and paste it as a soft stroke mask."""
    s = int(rng.uniform(0.55, 0.68) * size)
    img = Image.fromarray((digit8 / 16.0).astype(np.float32), mode="F")
    img = img.resize((s, s), Image.BICUBIC)
    angle = math.radians(rng.uniform(-15, 15))
    shear = rng.uniform(-0.2, 0.2)
    zoom = rng.uniform(0.9, 1.1)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    c = s / 2
    # inverse affine (output -> input) about the centre: rotation, zoom, shear
    a, b, d, e = cos, -sin + shear, sin, cos
    img = img.transform((s, s), Image.AFFINE, (a, b, c - a * c - b * c, d, e, c - d * c - e * c),
                        resample=Image.BILINEAR)
    stroke = np.clip((np.asarray(img) - 0.3) / 0.25, 0, 1)
    mask = np.zeros((size, size), np.float32)
    ox, oy = rng.integers(0, size - s + 1, 2)
    mask[oy:oy + s, ox:ox + s] = stroke
    return mask


def _sklearn_digits(seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """scikit-learn's 1,797 real 8x8 digits, split by seed into disjoint train/test sources."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    split = {"train": order[:N_TRAIN_SOURCE_DIGITS], "test": order[N_TRAIN_SOURCE_DIGITS:]}
    return ({k: data.images[v] for k, v in split.items()},
            {k: data.target[v] for k, v in split.items()})


def cmnist_image(digit8: np.ndarray, background: int, rng: np.random.Generator,
                 size: int = CMNIST_SIZE) -> np.ndarray:
    """One Colorful-MNIST-like uint8 image: a bright, lightly tinted digit on a texture."""
    bg = cmnist_background(background, rng, size)
    mask = _digit_mask(digit8, rng, size)[..., None]
    ink = hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.4), rng.uniform(0.92, 1.0))
    return (255 * (bg * (1 - mask) + ink * mask)).round().astype(np.uint8)


def generate(out: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write ``out/{train,test}/*.png`` and ``out/{train,test}.csv`` (file, digit, background)."""
    images, targets = _sklearn_digits(seed)
    rng = np.random.default_rng([seed, 1])
    for split, n in (("train", n_train), ("test", n_test)):
        (out / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            src = rng.integers(len(targets[split]))
            bg = int(rng.integers(len(BACKGROUND_CLASSES)))
            name = f"{split}/{i:05d}.png"
            Image.fromarray(cmnist_image(images[split][src], bg, rng)).save(out / name)
            rows.append((name, int(targets[split][src]), bg))
        write_csv(out / f"{split}.csv", ("file", "digit", "background"), rows)
    return out
