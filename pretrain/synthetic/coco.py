"""The COCO-like set, in COCO's layout: ``annotations/instances_{train,val}2017.json`` and
``{train,val}2017/*.jpg``.

10 categories with real COCO names and ids (all among ICL-MSR's 30), each a distinct polygon shape
and colour, with instance polygons; the scene behind an object is its category's "home" scene with
probability 0.8 (background as confounder); some images hold several non-overlapping objects.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pretrain.synthetic.common import scene

IMAGES = {"tiny": (16, 8), "default": (2000, 500)}  # train, val images per size


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
    img = Image.fromarray(scene(_coco_scene_choice(cats[0], rng), h, w, rng))
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


def generate(out: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
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
