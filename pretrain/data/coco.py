"""The COCO instances layout: its validator (everything the suite, detectron2 and pycocotools
read) and the single-object reader of ICL-MSR's foreground/background test."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pretrain.data.files import (
    DataError,
    check_files_exist,
    check_types,
    dataset_dir,
    load_rgb,
    read_json,
    require_fields,
)
from pretrain.data.labelled import LabelledImages, Transform

# ICL-MSR (ICML 2022) section 6.2: the 30 COCO categories of its foreground/background toy
# experiment, in the paper's label order (airplane = 0 ... zebra = 29).
ICL_MSR_CATEGORIES = (
    "airplane", "banana", "bear", "bed", "bench", "bird", "boat", "broccoli", "bus", "cat",
    "clock", "cow", "dog", "elephant", "fire hydrant", "giraffe", "horse", "motorcycle", "person",
    "pizza", "scissors", "sink", "stop sign", "teddy bear", "toilet", "traffic light", "train",
    "truck", "vase", "zebra")

# The types the suite, detectron2 and pycocotools need of a COCO json's fields (bool is not a
# number here: ``True`` as an id is a sign of a broken file).
NUMBER = (int, float)
COCO_TYPES = {"id": int, "image_id": int, "category_id": int, "file_name": str, "width": int,
              "height": int, "area": NUMBER, "iscrowd": int, "name": str,
              "segmentation": (list, dict)}


def validate_coco(path: Path, image_dir: Path, masks: bool = False) -> dict:
    """A COCO instances json checked for everything the suite, detectron2 and pycocotools read:
    the fields of every image, annotation (``segmentation`` too with ``masks``) and category,
    unique ids (annotation ids from 1), ids that refer to listed images and categories, and
    every image file. Returns the json."""
    doc = read_json(path)
    absent = [k for k in ("images", "annotations", "categories")
              if not isinstance(doc, dict) or not isinstance(doc.get(k), list)]
    if absent:
        raise DataError(f"{path}: no list {absent} at the top level; not a COCO instances file")
    fields = {"images": ("id", "file_name", "width", "height"),
              "annotations": ("id", "image_id", "category_id", "bbox", "area", "iscrowd")
              + (("segmentation",) if masks else ()),
              "categories": ("id", "name")}
    for key, needed in fields.items():
        for i, item in enumerate(doc[key]):
            require_fields(path, item, needed, f"{key}[{i}]")
            check_types(path, item, COCO_TYPES, f"{key}[{i}]")
            box = item.get("bbox", [0, 0, 0, 0])
            if not (isinstance(box, list) and len(box) == 4 and all(
                    isinstance(v, NUMBER) and not isinstance(v, bool) for v in box)):
                raise DataError(f"{path}: {key}[{i}]: 'bbox' must be [x, y, width, height] "
                                f"numbers, got {box!r:.60}; repair or regenerate the file")
    empty = [k for k in ("images", "annotations", "categories") if not doc[k]]
    if empty:
        raise DataError(f"{path}: no {' and no '.join(empty)}; nothing to train on or score")
    for key in ("images", "annotations", "categories"):  # detectron2 asserts unique ids
        repeated = sorted(i for i, n in Counter(item["id"] for item in doc[key]).items() if n > 1)
        if repeated:
            raise DataError(f"{path}: {len(repeated)} id(s) of {key} repeat, e.g. "
                            f"{repeated[:5]}; ids must be unique: repair or regenerate the file")
    unscorable = [a["id"] for a in doc["annotations"] if a["id"] < 1]
    if unscorable:  # pycocotools' matching reads annotation id 0 as "matched nothing"
        raise DataError(f"{path}: annotation id(s) {unscorable[:5]} below 1; COCO annotation ids "
                        "start at 1: repair or regenerate the file")
    image_ids, category_ids = {im["id"] for im in doc["images"]}, {c["id"] for c in
                                                                    doc["categories"]}
    orphans = [a["id"] for a in doc["annotations"]
               if a["image_id"] not in image_ids or a["category_id"] not in category_ids]
    if orphans:
        raise DataError(f"{path}: {len(orphans)} annotation(s) refer to an unknown image or "
                        f"category, e.g. ids {orphans[:5]}")
    check_files_exist(image_dir, [im["file_name"] for im in doc["images"]], path)
    return doc


def coco_files(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation json, image folder) of ``split`` (train or val) in the COCO layout."""
    coco = dataset_dir(root, "coco", "annotations")
    return coco / "annotations" / f"instances_{split}2017.json", coco / f"{split}2017"


class CocoObjects(LabelledImages):
    """Single-object COCO images of ``categories`` (ICL-MSR's foreground/background test).

    Keeps the images with exactly one annotation, whose category is in ``categories``;
    ``view="full"`` yields the whole image, ``view="foreground"`` the object's box crop.
    Labels: ``category`` = index into ``categories`` (the paper's order by default).
    ``present`` lists the requested categories that have at least one such image (the synthetic
    set uses 10 of the 30).
    """

    SPLITS = ("train", "val")
    VIEWS = ("full", "foreground")

    def __init__(self, root: str | Path, split: str = "train", view: str = "full",
                 categories: Sequence[str] = ICL_MSR_CATEGORIES, transform: Transform = None):
        if split not in self.SPLITS:
            raise DataError(f"COCO split must be one of {self.SPLITS}, got {split!r}")
        if view not in self.VIEWS:
            raise DataError(f"COCO view must be one of {self.VIEWS}, got {view!r}")
        self.root = dataset_dir(root, "coco", "annotations")
        self.view, self.transform, self.categories = view, transform, tuple(categories)
        ann_path, image_dir = coco_files(self.root, split)
        doc = validate_coco(ann_path, image_dir)
        names = {c["id"]: c["name"] for c in doc["categories"]}
        wanted = {cid: self.categories.index(n) for cid, n in names.items()
                  if n in self.categories}
        if not wanted:
            raise DataError(f"{ann_path}: none of the requested categories occur "
                            f"({', '.join(self.categories[:5])}, ...)")
        per_image = Counter(a["image_id"] for a in doc["annotations"])
        images = {img["id"]: img for img in doc["images"]}
        self.samples, self.boxes = [], []
        for ann in doc["annotations"]:
            if per_image[ann["image_id"]] != 1 or ann["category_id"] not in wanted:
                continue
            self.samples.append((image_dir / images[ann["image_id"]]["file_name"],
                                 {"category": wanted[ann["category_id"]]}))
            self.boxes.append(ann["bbox"])
        if not self.samples:
            raise DataError(f"{ann_path}: no single-object image of the requested categories")
        self.present = sorted({self.categories[lab["category"]] for _, lab in self.samples},
                              key=self.categories.index)

    def __getitem__(self, i: int) -> tuple[Any, dict[str, int]]:
        path, labels = self.samples[i]
        img = load_rgb(path)
        if self.view == "foreground":
            x, y, w, h = self.boxes[i]
            x0, y0 = max(0, int(x)), max(0, int(y))
            img = img.crop((x0, y0, max(x0 + 1, round(x + w)), max(y0 + 1, round(y + h))))
        return (self.transform(img) if self.transform else img), dict(labels)


