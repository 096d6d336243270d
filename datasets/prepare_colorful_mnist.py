"""Build Colorful-MNIST (Tian et al. 2020; RCL's benchmark) from MNIST and STL-10 raw files.

    python datasets/prepare_colorful_mnist.py --mnist DIR --stl10 DIR --out DIR [--seed N]
                                              [--n-train N] [--n-test N]

--mnist holds the four MNIST idx files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; ``.gz`` also accepted). --stl10 holds
STL-10's binary files (``train_X.bin``, ``train_y.bin``, ``test_X.bin``, ``test_y.bin``; the folder
``stl10_binary`` from ``stl10_binary.tar.gz``).

Each MNIST digit (train digits for train, test digits for test, in order) is drawn in white, with
its grey level as opacity, at a uniformly random position on a uniformly random STL-10 labelled
image of the same split, resized from 96 to 64 px (RCL's input size). Labels: digit (MNIST) and
background (STL-10 class 0-9, in ``class_names.txt`` order: airplane, bird, car, cat, deer, dog,
horse, monkey, ship, truck). The placement and colour are this suite's choices; the papers only say
"an MNIST digit on a randomly chosen STL-10 image". Deterministic by --seed.

Writes ``OUT/{train,test}/NNNNN.png`` and ``OUT/{train,test}.csv`` (file, digit, background): the
layout ``pretrain.data.ColorfulMNIST`` reads.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pretrain.data import ColorfulMNIST, DataError

SIZE = 64
STL_SIDE = 96
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_IMAGES, IDX_LABELS = 2051, 2049  # idx magic numbers: unsigned byte, 3 or 1 dimensions


def _find(folder: Path, name: str, hint: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder / name}: missing (also looked for {name}.gz); {hint}")


def _read_bytes(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An MNIST idx file as uint8 (N, rows, cols) images or (N,) labels, fully validated."""
    data = _read_bytes(path)
    ndim = 3 if magic == IDX_IMAGES else 1
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise DataError(f"{path}: not an idx {'image' if ndim == 3 else 'label'} file "
                        f"(magic number {found}, expected {magic})")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != header + int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but the file holds {len(data) - header} "
                        "data bytes (truncated or corrupt download)")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_stl10(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """STL-10 ``{split}_X.bin`` as (N, 96, 96, 3) uint8 and ``{split}_y.bin`` as labels 0-9."""
    hint = "download stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/"
    x_path, y_path = _find(folder, f"{split}_X.bin", hint), _find(folder, f"{split}_y.bin", hint)
    x, y = _read_bytes(x_path), np.frombuffer(_read_bytes(y_path), np.uint8)
    per_image = 3 * STL_SIDE * STL_SIDE
    if len(x) == 0 or len(x) % per_image:
        raise DataError(f"{x_path}: size {len(x)} is not a multiple of {per_image} "
                        "(3 x 96 x 96 bytes per image)")
    if len(y) != len(x) // per_image:
        raise DataError(f"{y_path}: {len(y)} labels for {len(x) // per_image} images in {x_path}")
    if y.min() < 1 or y.max() > 10:
        raise DataError(f"{y_path}: labels must be 1-10, found {y.min()}-{y.max()}")
    # STL-10 stores each image channel-first and column-major
    images = np.frombuffer(x, np.uint8).reshape(-1, 3, STL_SIDE, STL_SIDE).transpose(0, 3, 2, 1)
    return images, y.astype(np.int64) - 1


def compose(digit: np.ndarray, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A white digit (grey level = opacity) at a random position on a 64 px background."""
    bg = np.asarray(Image.fromarray(background).resize((SIZE, SIZE), Image.BILINEAR), np.float32)
    h, w = digit.shape
    y, x = rng.integers(0, SIZE - h + 1), rng.integers(0, SIZE - w + 1)
    alpha = digit.astype(np.float32)[..., None] / 255.0
    bg[y:y + h, x:x + w] = bg[y:y + h, x:x + w] * (1 - alpha) + 255.0 * alpha
    return bg.round().astype(np.uint8)


def prepare(mnist: Path, stl10: Path, out: Path, seed: int = 0,
            limits: dict[str, int | None] | None = None) -> Path:
    """Write Colorful-MNIST into ``out`` (see the module docstring); returns ``out``."""
    limits = limits or {}
    if (out / "train.csv").exists() or (out / "test.csv").exists():
        raise DataError(f"{out}: already holds a Colorful-MNIST CSV; choose a new --out")
    hint = "download the four MNIST idx files (http://yann.lecun.com/exdb/mnist/)"
    sources = {}
    for split, (img_name, lab_name) in MNIST_FILES.items():  # validate everything before writing
        digits = read_idx(_find(mnist, img_name, hint), IDX_IMAGES)
        labels = read_idx(_find(mnist, lab_name, hint), IDX_LABELS)
        if len(digits) != len(labels):
            raise DataError(f"{mnist / lab_name}: {len(labels)} labels for {len(digits)} images")
        if digits.shape[1] > SIZE or digits.shape[2] > SIZE:
            raise DataError(f"{mnist / img_name}: digits of {digits.shape[1:]} px do not fit "
                            f"in {SIZE} px")
        sources[split] = digits, labels, *read_stl10(stl10, split)
    rng = np.random.default_rng(seed)
    for split, (digits, labels, backgrounds, classes) in sources.items():
        n = min(limits.get(split) or len(digits), len(digits))
        (out / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            j = int(rng.integers(len(backgrounds)))
            name = f"{split}/{i:05d}.png"
            Image.fromarray(compose(digits[i], backgrounds[j], rng)).save(out / name)
            rows.append((name, int(labels[i]), int(classes[j])))
        with open(out / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([("file", "digit", "background"), *rows])
        ColorfulMNIST(out, split)  # the reader accepts what was written
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist", type=Path, required=True, help="folder with the MNIST idx files")
    ap.add_argument("--stl10", type=Path, required=True, help="folder with STL-10 *_X/_y.bin")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=None, help="first N train digits (all 60,000)")
    ap.add_argument("--n-test", type=int, default=None, help="first N test digits (all 10,000)")
    args = ap.parse_args(argv)
    try:
        out = prepare(args.mnist, args.stl10, args.out, args.seed,
                      {"train": args.n_train, "test": args.n_test})
    except DataError as e:
        sys.exit(f"error: {e}")
    print(f"wrote Colorful-MNIST to {out}")
    return out


if __name__ == "__main__":
    main()
