"""The Pascal-VOC-like set, in VOC's official layout: ``VOCdevkit/VOC2007`` (trainval, test) and
``VOCdevkit/VOC2012`` (trainval; segmentation train and val), each with ``JPEGImages/*.jpg``,
``Annotations/*.xml`` and ``ImageSets/Main/*.txt``; VOC2012 also ``SegmentationClass/*.png``
(palette PNGs: 0 background, the class's VOC index, 255 on object borders = ignore) and
``ImageSets/Segmentation/{train,val}.txt``.

The shortcut the suite studies: each of the five classes (real VOC names) has a home scene; in
the training images (VOC2007 and VOC2012 trainval, segmentation train) the scene behind the
objects is the first object's home scene with probability :data:`HOME_SCENE_PROB`, so the
background colour predicts the class; in the test images (VOC2007 test, segmentation val) the
scene is drawn uniformly, so it does not. ``VOC2007/ImageSets/Main/test_home.txt`` lists extra
test images drawn as the training images are (home scenes): AP on them minus AP on ``test`` is
the shortcut's gap. ``shortcut.csv`` beside ``VOCdevkit`` lists, per image, its split, first
class, scene and whether the scene is that class's home.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from pretrain.data.voc import HOME_TEST, IGNORE_LABEL, VOC_CLASSES
from pretrain.synthetic.coco import _place_polygon
from pretrain.synthetic.common import scene, write_csv

IMAGES = {"tiny": (8, 6), "default": (400, 100)}  # trainval (2007 + 2012), test images per size
HOME_SCENE_PROB = 0.9  # P(scene = the first object's home scene) in the training images


@dataclass(frozen=True)
class VocClass:
    name: str  # a real VOC class name (its segmentation label: its index in VOC_CLASSES + 1)
    shape: str  # a polygon of pretrain.synthetic.coco
    colour: tuple[int, int, int]
    scene: int  # its home background (one of the ten scene textures, hue = scene / 10)


CLASSES = (VocClass("aeroplane", "cross", (215, 215, 225), 1),
           VocClass("bus", "rectangle", (235, 190, 40), 3),
           VocClass("cat", "triangle", (230, 150, 50), 5),
           VocClass("bottle", "vase", (70, 110, 200), 7),
           VocClass("person", "capsule", (220, 120, 90), 9))


def _palette() -> list[int]:
    """VOC's colour map (the devkit's bit-interleaved palette), 256 RGB triples."""
    colours = []
    for label in range(256):
        r = g = b = 0
        c = label
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours += [r, g, b]
    return colours


def _image(rng: np.random.Generator, first: VocClass, home: bool
           ) -> tuple[Image.Image, Image.Image, list[tuple[VocClass, tuple[int, ...]]], int]:
    """One image whose first object is ``first``: the image, its label PNG, its objects with
    1-based inclusive boxes, and its scene."""
    w, h = int(rng.choice([128, 160])), int(rng.choice([128, 160]))
    classes = [first] + ([CLASSES[int(rng.integers(len(CLASSES)))]] if rng.random() < 0.3 else [])
    backdrop = classes[0].scene if home and rng.random() < HOME_SCENE_PROB else int(
        rng.integers(10))
    img = Image.fromarray(scene(backdrop, h, w, rng))
    label = Image.new("P", (w, h), 0)
    label.putpalette(_palette())
    draw, paint = ImageDraw.Draw(img), ImageDraw.Draw(label)
    objects: list[tuple[VocClass, tuple[int, ...]]] = []
    for cls in classes:
        radius = rng.uniform(18, 30) if len(classes) > 1 else rng.uniform(22, 40)
        cx, cy = rng.uniform(radius + 2, w - radius - 2), rng.uniform(radius + 2, h - radius - 2)
        poly = _place_polygon(cls.shape, cx, cy, radius, rng)
        poly = np.clip(poly, 0, [w - 1, h - 1])
        x0, y0 = np.floor(poly.min(0)).astype(int)
        x1, y1 = np.ceil(poly.max(0)).astype(int)
        if any(x0 <= b[2] + 1 and b[0] - 1 <= x1 + 1 and y0 <= b[3] + 1 and b[1] - 1 <= y1 + 1
               for _, b in objects):
            continue  # overlaps an earlier object (boxes are 1-based below)
        colour = tuple(int(c) for c in np.clip(np.array(cls.colour) + rng.normal(0, 10, 3), 0, 255))
        points = [tuple(p) for p in poly]
        draw.polygon(points, fill=colour, outline=(20, 20, 20))
        paint.polygon(points, fill=VOC_CLASSES.index(cls.name) + 1, outline=IGNORE_LABEL)
        objects.append((cls, (x0 + 1, y0 + 1, x1 + 1, y1 + 1)))
    return img, label, objects, backdrop


def _xml(folder: str, name: str, size: tuple[int, int],
         objects: list[tuple[VocClass, tuple[int, ...]]]) -> str:
    """The annotation file as VOC writes it (the fields detectron2's reader and evaluator read)."""
    body = "".join(
        f"<object><name>{escape(cls.name)}</name><pose>Unspecified</pose><truncated>0"
        f"</truncated><difficult>0</difficult><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
        f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>" for cls, box in objects)
    return (f"<annotation><folder>{folder}</folder><filename>{name}.jpg</filename><size><width>"
            f"{size[0]}</width><height>{size[1]}</height><depth>3</depth></size><segmented>0"
            f"</segmented>{body}</annotation>\n")


def generate(out: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write ``out/VOCdevkit/VOC2007`` (``n_train // 2`` trainval, ``n_test`` test and
    ``max(5, n_test // 2)`` home-scene test images) and
    ``out/VOCdevkit/VOC2012`` (the other trainval images, which are also the segmentation train
    split, and ``max(2, n_test // 2)`` segmentation val images), and ``out/shortcut.csv``."""
    rng = np.random.default_rng([seed, 7])
    n_2007 = n_train // 2
    # (year, image-set files it is listed in, images, home scenes?)
    plan = (("2007", ("Main/trainval",), n_2007, True), ("2007", ("Main/test",), n_test, False),
            ("2007", (f"Main/{HOME_TEST}",), max(len(CLASSES), n_test // 2), True),
            ("2012", ("Main/trainval", "Segmentation/train"), n_train - n_2007, True),
            ("2012", ("Segmentation/val",), max(2, n_test // 2), False))
    shortcut, lists, made = [], {}, {True: 0, False: 0}  # images made, training or not
    for year, listed_in, n, home in plan:
        root = out / "VOCdevkit" / f"VOC{year}"
        segmented = ("ImageSets/Segmentation", "SegmentationClass") if year == "2012" else ()
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main", *segmented):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for _ in range(n):  # training and test images cycle through the classes: each has some
            name = f"{year}_{len(shortcut):06d}"
            first = CLASSES[made[home] % len(CLASSES)]
            made[home] += 1
            img, label, objects, backdrop = _image(rng, first, home)
            img.save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            (root / "Annotations" / f"{name}.xml").write_text(
                _xml(f"VOC{year}", name, img.size, objects))
            if year == "2012":
                label.save(root / "SegmentationClass" / f"{name}.png")
            for image_set in listed_in:
                lists.setdefault(root / "ImageSets" / f"{image_set}.txt", []).append(name)
            shortcut.append((name, f"VOC{year}/{'+'.join(listed_in)}", first.name, backdrop,
                             int(backdrop == first.scene)))
    for path, names in lists.items():
        path.write_text("".join(f"{name}\n" for name in names))
    write_csv(out / "shortcut.csv", ("image", "split", "first_class", "scene", "home_scene"),
              shortcut)
    return out
