"""The embedded default data: synthetic COCO, MPII, FairFace and Colorful-MNIST in the real layouts.

Each set is written in exactly the layout the readers in :mod:`pretrain.data` (and detectron2,
pycocotools, mmpose) read for the real data set, and each carries the shortcut the seed papers
study, so the suite has something to measure:

- ``colorful_mnist``: real handwriting (scikit-learn's bundled 8x8 digits, separate source digits
  for train and test) upscaled, jittered and drawn bright on one of 10 procedural background
  classes. Each background class has its own pattern *and* colour family, so the background is the
  easy, dominant cue; digits are large and high-contrast over a low-contrast texture, so a
  supervised model can still learn them (the digit ceiling; see /work/shared/CALIBRATION.md: with
  full-contrast textures even supervised models could not learn the digits).
- ``fairface``: drawn faces. Race-like = skin tone (easy colour cue); age-like = eye size, face
  length, wrinkles, greying hair (subtle shape cues on a continuous latent age, so neighbouring
  groups overlap); gender-like = jaw squareness and hair length (overlapping distributions).
- ``coco``: 10 categories with real COCO names and ids (all among ICL-MSR's 30), each a distinct
  polygon shape and colour, with instance polygons; the scene behind an object is its category's
  "home" scene with probability 0.8 (background as confounder); some images hold several
  non-overlapping objects.
- ``mpii``: articulated stick figures with 16 joints in MPII order on cluttered scenes, with
  joints_vis (occluders hide some joints), center/scale and head boxes.

``generate(out, size, seed)`` is deterministic by seed. ``default_root()`` caches one generated set
under ``$SUITE_DATA_DIR`` (default ``<repo>/data``).
"""
from __future__ import annotations

import colorsys
import csv
import fcntl
import io
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parent.parent
SETS = ("coco", "mpii", "fairface", "colorful_mnist")


@dataclass(frozen=True)
class Size:
    """Image counts per split for one named size."""

    cmnist: tuple[int, int]  # train, test
    fairface: tuple[int, int]  # train, val
    coco: tuple[int, int]  # train, val
    mpii: tuple[int, int]  # train, val


SIZES = {
    "tiny": Size(cmnist=(40, 20), fairface=(40, 20), coco=(16, 8), mpii=(16, 8)),
    "default": Size(cmnist=(6000, 2000), fairface=(4000, 1000), coco=(2000, 500),
                    mpii=(2000, 500)),
}

# ---------------------------------------------------------------------------------------------
# Colorful-MNIST-like
# ---------------------------------------------------------------------------------------------
CMNIST_SIZE = 64
BACKGROUND_CLASSES = ("stripes_0", "stripes_45", "stripes_90", "stripes_135", "checkerboard",
                      "rings", "gradient", "blobs", "noise", "dots")
N_TRAIN_SOURCE_DIGITS = 1400  # of scikit-learn's 1,797; the remaining 397 only appear in test


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1)))


def _pattern(kind: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A (h, w) pattern in [0, 1] for background class ``kind`` with random phase/scale."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = min(h, w) / 64.0
    if kind < 4:  # oriented stripes
        theta = math.radians(45 * kind + rng.uniform(-8, 8))
        period = rng.uniform(8, 14) * scale
        proj = x * math.cos(theta) + y * math.sin(theta)
        return 0.5 + 0.5 * np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi))
    if kind == 4:  # checkerboard
        s = rng.uniform(7, 12) * scale
        ox, oy = rng.uniform(0, 2 * s, 2)
        return ((np.floor((x + ox) / s) + np.floor((y + oy) / s)) % 2).astype(np.float32)
    if kind == 5:  # concentric rings
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = np.hypot(x - cx, y - cy)
        return 0.5 + 0.5 * np.sin(2 * np.pi * r / (rng.uniform(7, 12) * scale)
                                  + rng.uniform(0, 2 * np.pi))
    if kind == 6:  # linear gradient
        theta = rng.uniform(0, 2 * np.pi)
        proj = x * math.cos(theta) + y * math.sin(theta)
        return (proj - proj.min()) / (np.ptp(proj) + 1e-6)
    if kind == 7:  # gaussian blobs
        out = np.zeros((h, w), np.float32)
        for _ in range(rng.integers(4, 8)):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            sig = rng.uniform(5, 9) * scale
            out += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sig * sig))
        return np.clip(out, 0, 1)
    if kind == 8:  # fine noise
        return rng.random((h, w), dtype=np.float32)
    # polka dots on a jittered grid
    s = rng.uniform(10, 14) * scale
    ox, oy = rng.uniform(0, s, 2)
    dx = (x + ox) % s - s / 2
    dy = (y + oy) % s - s / 2
    return (np.hypot(dx, dy) < s * 0.28).astype(np.float32)


def cmnist_background(kind: int, rng: np.random.Generator, size: int = CMNIST_SIZE,
                      contrast: tuple[float, float] = (0.12, 0.22)) -> np.ndarray:
    """A low-contrast (size, size, 3) texture of class ``kind`` in its own colour family.

    The hue family (36 degrees per class, +-10 jitter) and the pattern both identify the class;
    the value contrast is kept low so the bright digit on top stays legible.
    """
    hue = kind / len(BACKGROUND_CLASSES) + rng.uniform(-0.028, 0.028)
    sat = rng.uniform(0.35, 0.65)
    v0, delta = rng.uniform(0.3, 0.5), rng.uniform(*contrast)
    c1, c2 = _hsv(hue, sat, v0 - delta / 2), _hsv(hue, sat, v0 + delta / 2)
    p = _pattern(kind, size, size, rng)[..., None]
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
    ink = _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.4), rng.uniform(0.92, 1.0))
    return (255 * (bg * (1 - mask) + ink * mask)).round().astype(np.uint8)


def generate_colorful_mnist(out: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
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
        _write_csv(out / f"{split}.csv", ("file", "digit", "background"), rows)
    return out


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------
# FairFace-like
# ---------------------------------------------------------------------------------------------
FACE_SIZE = 64
AGE_GROUPS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
GENDERS = ("Male", "Female")
RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
         "Middle Eastern")
# One skin tone per race-like group: the easy colour cue.
SKIN_TONES = np.array([(236, 200, 178), (92, 60, 44), (198, 146, 108), (240, 212, 158),
                       (184, 136, 92), (142, 96, 68), (214, 170, 128)], np.float32)
HAIR_COLOURS = np.array([(25, 20, 18), (70, 45, 30), (120, 85, 50), (200, 170, 110)], np.float32)


def face_image(age: int, gender: int, race: int, rng: np.random.Generator,
               size: int = FACE_SIZE) -> Image.Image:
    """Draw one face at 2x and downsample. See the module docstring for which cue is which."""
    S = 2 * size
    k = S / 128.0  # geometry below is written for a 128 px canvas
    t = (age + rng.uniform(0, 1)) / len(AGE_GROUPS)  # continuous age latent in [0, 1)
    male = gender == 0
    bg = rng.uniform(60, 200) + rng.uniform(-25, 25, 3)
    img = Image.new("RGB", (S, S), tuple(int(c) for c in np.clip(bg, 0, 255)))
    draw = ImageDraw.Draw(img)
    skin = np.clip(SKIN_TONES[race] + rng.normal(0, 6, 3), 0, 255)
    skin_t = tuple(int(c) for c in skin)
    grey = np.clip((t - 0.55) / 0.45, 0, 1) * rng.uniform(0.5, 1.0)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * (1 - grey) + 200 * grey
    hair_t = tuple(int(c) for c in hair)

    cx, cy = (64 + rng.uniform(-4, 4)) * k, (68 + rng.uniform(-4, 4)) * k
    rx = (rng.uniform(25, 30) + 1.5 * (1 if male else -1)) * k
    ry = rx * (1.12 + 0.22 * t + rng.uniform(-0.04, 0.04))  # faces lengthen with age
    long_hair = rng.random() < (0.3 if male else 0.7)
    jaw = float(np.clip(rng.normal(0.65 if male else 0.35, 0.2), 0, 1))  # squareness
    if long_hair:
        draw.rectangle([cx - rx * 1.2, cy - ry * 0.6, cx + rx * 1.2, cy + ry * 1.25], fill=hair_t)
    draw.ellipse([cx - rx * 1.12, cy - ry * 1.2, cx + rx * 1.12, cy + ry * 0.2], fill=hair_t)
    draw.ellipse([cx - rx, cy - ry * 0.95, cx + rx, cy + ry], fill=skin_t)
    if jaw > 0.05:  # a square jaw: a skin block over the lower face, as wide as the jaw is square
        jw = rx * (0.55 + 0.4 * jaw)
        draw.rounded_rectangle([cx - jw, cy, cx + jw, cy + ry * (0.8 + 0.12 * jaw)],
                               radius=max(1.0, (1 - jaw) * 12 * k), fill=skin_t)
    dark = tuple(int(c) for c in skin * 0.72)
    # wrinkles: forehead lines and crow's feet appear and deepen with age
    n_lines = int(np.clip((t - 0.35) / 0.65 * 4 + rng.uniform(-0.5, 0.5), 0, 4))
    for j in range(n_lines):
        yy = cy - ry * (0.55 - 0.09 * j)
        draw.line([cx - rx * 0.45, yy, cx + rx * 0.45, yy], fill=dark, width=max(1, int(k)))
    eye_y = cy - ry * 0.12 + ry * 0.12 * (1 - t)  # children's eyes sit lower
    eye_r = (5.5 - 2.8 * t + rng.uniform(-0.4, 0.4)) * k  # and are larger
    for side in (-1, 1):
        ex = cx + side * rx * 0.42
        draw.ellipse([ex - eye_r * 1.3, eye_y - eye_r, ex + eye_r * 1.3, eye_y + eye_r],
                     fill=(245, 245, 240))
        draw.ellipse([ex - eye_r * 0.6, eye_y - eye_r * 0.6, ex + eye_r * 0.6,
                      eye_y + eye_r * 0.6], fill=(40, 30, 25))
        if t > 0.6:
            for dy in (-2, 2):
                draw.line([ex + side * eye_r * 1.5, eye_y, ex + side * eye_r * 2.6,
                           eye_y + dy * k], fill=dark, width=max(1, int(k)))
    draw.line([cx, eye_y + 4 * k, cx - 2 * k, cy + ry * 0.3], fill=dark, width=max(1, int(k)))
    mouth_y = cy + ry * 0.55
    mw = rx * rng.uniform(0.3, 0.45)
    draw.line([cx - mw, mouth_y, cx + mw, mouth_y], fill=tuple(int(c) for c in skin * 0.6),
              width=max(1, int(2 * k)))
    return img.resize((size, size), Image.BOX)


def generate_fairface(out: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """Write the official FairFace layout: ``fairface_label_{train,val}.csv`` and images."""
    rng = np.random.default_rng([seed, 2])
    for split, n in (("train", n_train), ("val", n_val)):
        (out / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            age, gender, race = (int(rng.integers(len(AGE_GROUPS))), int(rng.integers(2)),
                                 int(rng.integers(len(RACES))))
            name = f"{split}/{i + 1}.jpg"
            face_image(age, gender, race, rng).save(out / name, quality=95)
            rows.append((name, AGE_GROUPS[age], GENDERS[gender], RACES[race],
                         str(bool(rng.random() < 0.5))))
        _write_csv(out / f"fairface_label_{split}.csv",
                   ("file", "age", "gender", "race", "service_test"), rows)
    return out


# ---------------------------------------------------------------------------------------------
# COCO-like
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CocoCategory:
    id: int  # the real COCO id
    name: str  # the real COCO name
    supercategory: str
    shape: str
    colour: tuple[int, int, int]
    scene: int  # index into the scene textures: its "home" background


COCO_CATEGORIES = (
    CocoCategory(1, "person", "person", "capsule", (220, 120, 90), 0),
    CocoCategory(5, "airplane", "vehicle", "cross", (215, 215, 225), 1),
    CocoCategory(6, "bus", "vehicle", "rectangle", (235, 190, 40), 2),
    CocoCategory(11, "fire hydrant", "outdoor", "tee", (200, 30, 30), 3),
    CocoCategory(13, "stop sign", "outdoor", "octagon", (210, 20, 40), 4),
    CocoCategory(24, "zebra", "animal", "ellipse", (245, 245, 245), 5),
    CocoCategory(52, "banana", "food", "crescent", (240, 220, 60), 6),
    CocoCategory(59, "pizza", "food", "triangle", (230, 150, 50), 7),
    CocoCategory(85, "clock", "indoor", "circle", (250, 250, 235), 8),
    CocoCategory(86, "vase", "indoor", "vase", (70, 110, 200), 9),
)
COCO_HOME_SCENE_PROB = 0.8  # P(background = the category's home scene) for single-object images


def _shape_polygon(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-size polygon (N, 2) centred on 0 for a category shape, before scale/rotation."""
    if shape in ("circle", "ellipse", "octagon"):
        n = 8 if shape == "octagon" else 24
        a = np.linspace(0, 2 * np.pi, n, endpoint=False) + (np.pi / 8 if n == 8 else 0)
        ry = 0.55 if shape == "ellipse" else 1.0
        return np.stack([np.cos(a), ry * np.sin(a)], 1)
    if shape == "rectangle":
        return np.array([[-1, -0.55], [1, -0.55], [1, 0.55], [-1, 0.55]], float)
    if shape == "triangle":
        return np.array([[0, -1], [0.8, 0.8], [-0.8, 0.8]], float)
    if shape == "cross":
        return np.array([[-0.15, -1], [0.15, -1], [0.15, -0.2], [1, -0.1], [1, 0.15], [0.15, 0.2],
                         [0.15, 0.7], [0.4, 0.95], [-0.4, 0.95], [-0.15, 0.7], [-0.15, 0.2],
                         [-1, 0.15], [-1, -0.1], [-0.15, -0.2]], float)
    if shape == "tee":
        return np.array([[-0.8, -1], [0.8, -1], [0.8, -0.55], [0.3, -0.55], [0.3, 1], [-0.3, 1],
                         [-0.3, -0.55], [-0.8, -0.55]], float)
    if shape == "capsule":
        a = np.linspace(0, np.pi, 10)
        top = np.stack([0.4 * np.cos(a), -0.6 - 0.4 * np.sin(a)], 1)
        return np.concatenate([top, [[-0.4, 1.0], [0.4, 1.0]]])[::-1]
    if shape == "crescent":
        a = np.linspace(-0.75 * np.pi, 0.75 * np.pi, 14)
        outer = np.stack([np.cos(a), np.sin(a)], 1)
        inner = np.stack([0.25 + 0.6 * np.cos(a[::-1]), 0.75 * np.sin(a[::-1])], 1)
        return np.concatenate([outer, inner])
    if shape == "vase":
        return np.array([[-0.35, -1], [0.35, -1], [0.2, -0.6], [0.7, 0], [0.5, 0.8], [0.3, 1],
                         [-0.3, 1], [-0.5, 0.8], [-0.7, 0], [-0.2, -0.6]], float)
    raise ValueError(f"unknown shape {shape!r}")


def _place_polygon(shape: str, cx: float, cy: float, radius: float,
                   rng: np.random.Generator) -> np.ndarray:
    poly = _shape_polygon(shape, rng)
    a = math.radians(rng.uniform(-25, 25))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return poly @ rot.T * radius + [cx, cy]


def _polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _scene(index: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A full-contrast (h, w, 3) scene texture: pattern ``index`` in hue family ``index``."""
    hue = index / 10 + rng.uniform(-0.03, 0.03)
    sat = rng.uniform(0.3, 0.6)
    c1, c2 = _hsv(hue, sat, rng.uniform(0.2, 0.4)), _hsv(hue, sat, rng.uniform(0.55, 0.8))
    p = _pattern(index, h, w, rng)[..., None]
    return (255 * (c1 * (1 - p) + c2 * p)).astype(np.uint8)


def _coco_scene_choice(cat: CocoCategory, rng: np.random.Generator) -> int:
    """The scene behind an image whose first object is ``cat``: the confounder."""
    if rng.random() < COCO_HOME_SCENE_PROB:
        return cat.scene
    return int(rng.integers(len(COCO_CATEGORIES)))


def _coco_image(rng: np.random.Generator
                ) -> tuple[Image.Image, list[tuple[CocoCategory, np.ndarray]]]:
    w, h = int(rng.choice([128, 160])), int(rng.choice([128, 160]))
    n_obj = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    cats = [COCO_CATEGORIES[i] for i in rng.integers(len(COCO_CATEGORIES), size=n_obj)]
    img = Image.fromarray(_scene(_coco_scene_choice(cats[0], rng), h, w, rng))
    draw = ImageDraw.Draw(img)
    placed: list[tuple[CocoCategory, np.ndarray]] = []
    boxes: list[tuple[float, float, float, float]] = []
    for cat in cats:
        for _ in range(30):  # rejection-sample a box that overlaps no earlier object
            radius = rng.uniform(14, 30) if n_obj > 1 else rng.uniform(20, 40)
            cx = rng.uniform(radius + 2, w - radius - 2)
            cy = rng.uniform(radius + 2, h - radius - 2)
            poly = _place_polygon(cat.shape, cx, cy, radius, rng)
            poly[:, 0] = np.clip(poly[:, 0], 0, w - 1)
            poly[:, 1] = np.clip(poly[:, 1], 0, h - 1)
            box = (*poly.min(0), *poly.max(0))
            if all(box[2] < b[0] - 2 or box[0] > b[2] + 2 or box[3] < b[1] - 2 or box[1] > b[3] + 2
                   for b in boxes):
                break
        else:
            continue
        colour = tuple(int(c) for c in np.clip(np.array(cat.colour) + rng.normal(0, 10, 3), 0, 255))
        draw.polygon([tuple(pt) for pt in poly], fill=colour, outline=(20, 20, 20))
        if cat.name == "zebra":  # stripes inside; the mask stays the outline
            x0, y0, x1, y1 = box
            for xx in np.arange(x0 + 3, x1, 6):
                draw.line([xx, y0, xx, y1], fill=(15, 15, 15), width=2)
            draw.polygon([tuple(pt) for pt in poly], outline=(20, 20, 20))
        boxes.append(box)
        placed.append((cat, poly))
    return img, placed


def generate_coco(out: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """Write ``annotations/instances_{train,val}2017.json`` and ``{train,val}2017/*.jpg``."""
    rng = np.random.default_rng([seed, 3])
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    image_id, ann_id = 0, 0
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        (out / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for _ in range(n):
            image_id += 1
            img, placed = _coco_image(rng)
            name = f"{image_id:012d}.jpg"
            img.save(out / split / name, quality=95)
            images.append({"id": image_id, "file_name": name, "width": img.width,
                           "height": img.height, "license": 1})
            for cat, poly in placed:
                ann_id += 1
                x0, y0 = poly.min(0)
                x1, y1 = poly.max(0)
                annotations.append({
                    "id": ann_id, "image_id": image_id, "category_id": cat.id, "iscrowd": 0,
                    "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]],
                    "area": round(_polygon_area(poly), 2),
                    "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)]})
        doc = {"info": {"description": "ssl-transfer-suite synthetic COCO-like set",
                        "version": "1.0", "year": 2017, "contributor": "pretrain.synthetic",
                        "date_created": ""},
               "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
               "images": images, "annotations": annotations,
               "categories": [{"id": c.id, "name": c.name, "supercategory": c.supercategory}
                              for c in COCO_CATEGORIES]}
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return out


# ---------------------------------------------------------------------------------------------
# MPII-like
# ---------------------------------------------------------------------------------------------
MPII_SIZE = 128
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by pretrain/synthetic.py".ljust(116)
MPII_JOINTS = ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
               "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
               "l_elbow", "l_wrist")
# (parent, child, length as a fraction of body height, mean angle in degrees; 90 = straight down)
_BONES = ((6, 7, 0.30, -90), (7, 8, 0.06, -90), (8, 9, 0.13, -90),
          (7, 12, 0.11, 180), (12, 11, 0.17, 100), (11, 10, 0.15, 95),
          (7, 13, 0.11, 0), (13, 14, 0.17, 80), (14, 15, 0.15, 85),
          (6, 2, 0.06, 180), (2, 1, 0.24, 92), (1, 0, 0.24, 90),
          (6, 3, 0.06, 0), (3, 4, 0.24, 88), (4, 5, 0.24, 90))
_LIMB_SPREAD = {(6, 7): 12, (7, 8): 10, (8, 9): 10, (7, 12): 5, (7, 13): 5,
                (6, 2): 5, (6, 3): 5}  # trunk bones bend little; limbs swing by 50 degrees
_BONE_MEAN = {child: mean for _, child, _, mean in _BONES}


def _figure(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """Joint positions (16, 2) of one articulated figure in 0-based pixels, and its height."""
    height = rng.uniform(0.55, 0.8) * size
    joints = np.zeros((16, 2))
    joints[6] = rng.uniform(0.4, 0.6) * size, rng.uniform(0.5, 0.6) * size
    lean = rng.uniform(-15, 15)
    angles: dict[int, float] = {}  # direction of the bone ending at each joint
    for parent, child, length, mean in _BONES:
        spread = _LIMB_SPREAD.get((parent, child), 50)
        if parent in angles:  # a segment swings relative to its parent segment, like a real joint
            angle = angles[parent] + mean - _BONE_MEAN[parent] + rng.uniform(-spread, spread)
        else:
            angle = mean + lean + rng.uniform(-spread, spread)
        angles[child] = angle
        a = math.radians(angle)
        joints[child] = joints[parent] + length * height * np.array([math.cos(a), math.sin(a)])
    return joints, height


def _mpii_image(rng: np.random.Generator, size: int = MPII_SIZE):
    for _ in range(50):  # resample until the whole figure (with its head) fits in the image
        joints, height = _figure(rng, size)
        if joints.min() > 6 and joints.max() < size - 7:
            break
    img = Image.fromarray(_scene(int(rng.integers(10)), size, size, rng))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 5)):  # clutter
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(4, 14)
        draw.ellipse([x - r, y - r, x + r, y + r],
                     fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    shirt = tuple(int(c) for c in rng.integers(30, 255, 3))
    trousers = tuple(int(c) for c in rng.integers(30, 255, 3))
    skin = tuple(int(c) for c in SKIN_TONES[rng.integers(len(SKIN_TONES))])
    width = max(2, int(height * 0.05))
    for parent, child, _, _ in _BONES:
        colour = trousers if child in (0, 1, 2, 3, 4, 5) else shirt
        if child in (10, 15):
            colour = skin
        if child in (12, 11, 10, 2, 1, 0):  # right side darker: left/right stay tellable
            colour = tuple(int(c * 0.7) for c in colour)
        draw.line([tuple(joints[parent]), tuple(joints[child])], fill=colour,
                  width=width * (2 if child in (7, 8) else 1))
    head_c = (joints[8] + joints[9]) / 2
    head_r = np.linalg.norm(joints[9] - joints[8]) / 2 + 1
    draw.ellipse([*(head_c - head_r), *(head_c + head_r)], fill=skin, outline=(20, 20, 20))
    nose = head_c + (joints[12] - joints[13]) / (np.linalg.norm(joints[12] - joints[13]) + 1e-6) \
        * head_r * 0.6  # a facing cue
    draw.ellipse([*(nose - 1.5), *(nose + 1.5)], fill=(30, 20, 20))
    vis = np.ones(16, int)
    if rng.random() < 0.3:  # an occluder hides the joints under it
        x, y = rng.uniform(0.2, 0.8, 2) * size
        r = rng.uniform(8, 14)
        draw.rectangle([x - r, y - r, x + r, y + r],
                       fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        vis[(np.abs(joints - [x, y]) < r).all(1)] = 0
    headbox = np.array([head_c - head_r * 1.1, head_c + head_r * 1.1])
    return img, joints, vis, headbox


def generate_mpii(out: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """Write mmpose's MPII layout: ``annotations/mpii_{train,val}.json``, ``mpii_gt_val.mat``
    (``headboxes_src`` (2, 2, N) in val order) and ``images/*.jpg``.

    As in the real files, joints and center are 1-based (MATLAB) pixel coordinates and
    ``scale`` = person box height / 200.
    """
    from scipy.io import savemat

    rng = np.random.default_rng([seed, 4])
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    image_id = 0
    for split, n in (("train", n_train), ("val", n_val)):
        anns, headboxes, joints_all, missing = [], [], [], []
        for _ in range(n):
            image_id += 1
            img, joints, vis, headbox = _mpii_image(rng)
            name = f"{image_id:09d}.jpg"
            img.save(out / "images" / name, quality=95)
            lo, hi = joints.min(0), joints.max(0)
            lo[1] = min(lo[1], headbox[0, 1])
            anns.append({"joints_vis": vis.tolist(),
                         "joints": np.round(joints + 1, 2).tolist(),
                         "image": name,
                         "scale": round(float(hi[1] - lo[1]) * 1.05 / 200, 4),
                         "center": np.round((lo + hi) / 2 + 1, 2).tolist()})
            headboxes.append(headbox + 1)
            joints_all.append(joints + 1)
            missing.append(1 - vis)
        (out / "annotations" / f"mpii_{split}.json").write_text(json.dumps(anns))
        if split == "val":
            buffer = io.BytesIO()
            savemat(buffer, {
                "headboxes_src": np.stack(headboxes, 2),  # (2, 2, N): [[x1, y1], [x2, y2]]
                "pos_gt_src": np.stack(joints_all, 2),  # (16, 2, N)
                "jnt_missing": np.stack(missing, 1),  # (16, N)
                "dataset_joints": np.array([[j] for j in MPII_JOINTS], dtype=object)})
            # savemat's 116-byte text header holds the creation time; a fixed one keeps the
            # output byte-identical for a given seed.
            data = MAT_HEADER + buffer.getvalue()[len(MAT_HEADER):]
            (out / "annotations" / "mpii_gt_val.mat").write_bytes(data)
    return out


# ---------------------------------------------------------------------------------------------
# All four, and the cached default
# ---------------------------------------------------------------------------------------------
def generate(out: Path, size: str = "default", seed: int = 0) -> Path:
    """Write ``out/{coco,mpii,fairface,colorful_mnist}`` for ``size`` in ``SIZES``; returns ``out``.

    Deterministic by ``seed``: the same seed writes the same files.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    out = Path(out)
    n = SIZES[size]
    generate_colorful_mnist(out / "colorful_mnist", *n.cmnist, seed=seed)
    generate_fairface(out / "fairface", *n.fairface, seed=seed)
    generate_coco(out / "coco", *n.coco, seed=seed)
    generate_mpii(out / "mpii", *n.mpii, seed=seed)
    return out


def data_dir() -> Path:
    """``$SUITE_DATA_DIR``, or ``<repo>/data`` (git-ignored)."""
    return Path(os.environ.get("SUITE_DATA_DIR", REPO_ROOT / "data"))


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def default_root(size: str = "default", seed: int = 0) -> Path:
    """``$SUITE_DATA_DIR/synthetic-{size}-seed{seed}``, generated first if absent.

    Generation goes into a temporary sibling folder that is renamed into place when complete, under
    a file lock, so concurrent callers generate once and an interrupted run leaves no partial set.
    """
    root = data_dir() / f"synthetic-{size}-seed{seed}"
    if root.is_dir():
        return root
    with _file_lock(root.with_name(root.name + ".lock")):
        if root.is_dir():  # another process finished it while we waited
            return root
        generate_into(root, size, seed)
    return root


def generate_into(root: Path, size: str = "default", seed: int = 0) -> Path:
    """:func:`generate` into a new temporary folder beside ``root`` (created here, so no other
    folder is ever touched), renamed to ``root`` when complete; on failure it is removed."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.partial-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir()  # exclusive: fails if the folder exists, so the one removed below is ours
    try:
        generate(tmp, size=size, seed=seed)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
