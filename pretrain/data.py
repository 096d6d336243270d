"""Readers for the suite's data layouts (documented in datasets/README.md).

Every reader takes the data set's own folder (e.g. ``.../coco``); passing the folder that holds
all four synthetic sets (``default_root()``) also works, the reader then uses its subfolder.
Every reader validates the layout when constructed and raises :class:`DataError` naming the file
and the problem; a corrupt image raises :class:`DataError` naming the image when it is read.
Items are ``(PIL RGB image or transform(image), labels dict)``.
"""
from __future__ import annotations

import csv
import io
import json
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from pretrain import voc_layout
from pretrain.cli import InputError

FAIRFACE_LABELS = {
    "age": ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"],
    "gender": ["Male", "Female"],
    "race": ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
             "Middle Eastern"],
}
FAIRFACE_COLUMNS = ("file", "age", "gender", "race", "service_test")
COLORFUL_MNIST_COLUMNS = ("file", "digit", "background")
# ICL-MSR (ICML 2022) section 6.2: the 30 COCO categories of its foreground/background toy
# experiment, in the paper's label order (airplane = 0 ... zebra = 29).
ICL_MSR_CATEGORIES = (
    "airplane", "banana", "bear", "bed", "bench", "bird", "boat", "broccoli", "bus", "cat",
    "clock", "cow", "dog", "elephant", "fire hydrant", "giraffe", "horse", "motorcycle", "person",
    "pizza", "scissors", "sink", "stop sign", "teddy bear", "toilet", "traffic light", "train",
    "truck", "vase", "zebra")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
MPII_NUM_JOINTS = 16

Transform = Callable[[Image.Image], Any] | None


class DataError(InputError):
    """A data layout or file is missing or malformed; the message names the path and the fix."""


# The suite's limit on an image's pixels, checked from its header before it is decoded: a few KB
# of PNG can declare gigapixels (a decompression bomb). 8192 x 8192 is over 30x the pixels of a
# 1920 x 1080 photo (the real sets' images are smaller), and below PIL's own limit
# (Image.MAX_IMAGE_PIXELS, about 89M, where PIL only warns; it refuses at twice that).
MAX_IMAGE_PIXELS = 8192 * 8192


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB, or raise :class:`DataError` naming it (also one larger than
    :data:`MAX_IMAGE_PIXELS`)."""
    try:
        with Image.open(path) as img:
            if img.width * img.height <= MAX_IMAGE_PIXELS:
                return img.convert("RGB")
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file is missing") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: refused by PIL as a decompression bomb ({e}); downscale "
                        "the image or replace it") from e
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({e}); the file is corrupt or not an "
                        "image - replace it or re-run the preparation script") from e
    raise DataError(f"{path}: image of {img.width} x {img.height} pixels, above the suite's "
                    f"limit of {MAX_IMAGE_PIXELS} (MAX_IMAGE_PIXELS in pretrain/data.py); a "
                    "decompression bomb, or an image to downscale before use")


def _dataset_dir(root: str | Path, name: str, marker: str) -> Path:
    """``root`` if it holds ``marker``, else ``root/name`` if that does (a suite data root)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist (expected the {name} layout, "
                        "see datasets/README.md)")
    if not (root / marker).exists() and (root / name / marker).exists():
        return root / name
    return root


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing {what} (see datasets/README.md for the layout)")
    return path


def _text(path: Path, what: str) -> str:
    """A data file's text, UTF-8 (a BOM is allowed); a wrong encoding names the line and byte."""
    _require(path, what)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: byte {data[e.start:e.start + 1]!r} at offset "
                        f"{e.start} is not UTF-8; save the file as UTF-8 (e.g. iconv -f "
                        "latin1 -t utf-8)") from e


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(_text(path, "label CSV"), newline=""))
    try:
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; "
                            f"expected header {','.join(columns)}")
        rows = list(reader)
    except csv.Error as e:  # a NUL byte, a field over csv's size limit
        # line_num counts the lines read before the one that failed
        raise DataError(f"{path}, line {reader.line_num + 1}: not CSV ({e}); repair or "
                        "regenerate the file") from e
    for line, row in enumerate(rows, start=2):
        empty = [c for c in columns if not (row.get(c) or "").strip()]
        if empty:
            raise DataError(f"{path}, line {line}: empty value for {', '.join(empty)}")
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _check_files_exist(base: Path, names: list[str], listed_in: Path) -> None:
    """Every listed image exists (one directory listing per folder, not one stat per file)."""
    listing: dict[Path, set[str]] = {}
    missing = []
    for name in names:
        p = base / name
        if p.parent not in listing:
            listing[p.parent] = ({q.name for q in p.parent.iterdir()} if p.parent.is_dir()
                                 else set())
        if p.name not in listing[p.parent]:
            missing.append(name)
    if missing:
        raise DataError(f"{listed_in}: {len(missing)} image file(s) it lists are missing, e.g. "
                        f"{', '.join(missing[:5])} (looked in {base})")


def _read_json(path: Path) -> Any:
    text = _text(path, "annotation file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # an annotation file is an object or a list: one that does not end as one was cut off
        ending = "" if text.rstrip().endswith(("}", "]")) else " (it ends mid-document: truncated?)"
        raise DataError(f"{path}: not valid JSON at line {e.lineno} column {e.colno} "
                        f"({e.msg}){ending}; re-download or regenerate it") from e
    except RecursionError as e:
        raise DataError(f"{path}: JSON nested too deeply to be an annotation file") from e


# The types the suite, detectron2 and pycocotools need of a COCO json's fields (bool is not a
# number here: ``True`` as an id is a sign of a broken file).
_NUMBER = (int, float)
COCO_TYPES = {"id": int, "image_id": int, "category_id": int, "file_name": str, "width": int,
              "height": int, "area": _NUMBER, "iscrowd": int, "name": str,
              "segmentation": (list, dict)}


def _check_types(path: Path, record: dict, types: dict[str, type | tuple[type, ...]],
                 what: str) -> None:
    for field, kind in types.items():
        if field in record and (not isinstance(record[field], kind)
                                or isinstance(record[field], bool)):
            names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise DataError(f"{path}: {what}: '{field}' must be {names}, got "
                            f"{record[field]!r:.60}; repair or regenerate the file")


def _require_fields(path: Path, record: dict, fields: Sequence[str], what: str) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{path}: {what} is not an object: {record!r:.80}")
    missing = [f for f in fields if f not in record]
    if missing:
        raise DataError(f"{path}: {what} lacks field(s) {', '.join(missing)}: {record!r:.120}")


def _int_label(path: Path, line: int, column: str, value: str, n: int) -> int:
    try:
        label = int(value)
    except ValueError:
        label = -1
    if not 0 <= label < n:
        raise DataError(f"{path}, line {line}: {column} must be an integer in 0..{n - 1}, "
                        f"got {value!r}")
    return label


class _LabelledImages(Dataset):
    """(image path, labels) pairs; subclasses fill ``self.samples`` after validating."""

    samples: list[tuple[Path, dict[str, int]]]
    transform: Transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, dict[str, int]]:
        path, labels = self.samples[i]
        img = load_rgb(path)
        return (self.transform(img) if self.transform else img), dict(labels)


class _ListedInCsv(_LabelledImages):
    """A layout with one label CSV per split listing the images (column ``file``) and their
    labels; subclasses name the layout and read a row's labels."""

    TITLE: ClassVar[str]          # for messages
    KEY: ClassVar[str]            # data key: its folder inside a suite data root
    SPLITS: ClassVar[tuple[str, ...]]
    CSV: ClassVar[str]            # the split's CSV, e.g. "{split}.csv"
    COLUMNS: ClassVar[tuple[str, ...]]

    def __init__(self, root: str | Path, split: str = "train", transform: Transform = None):
        if split not in self.SPLITS:
            raise DataError(f"{self.TITLE} split must be one of {self.SPLITS}, got {split!r}")
        csv_name = self.CSV.format(split=split)
        self.root = _dataset_dir(root, self.KEY, csv_name)
        self.transform = transform
        csv_path = self.root / csv_name
        rows = _read_csv(csv_path, self.COLUMNS)
        self.samples = [(self.root / row["file"], self.labels(csv_path, line, row))
                        for line, row in enumerate(rows, start=2)]
        _check_files_exist(self.root, [row["file"] for row in rows], csv_path)

    def labels(self, csv_path: Path, line: int, row: dict[str, str]) -> dict[str, int]:
        raise NotImplementedError


class ColorfulMNIST(_ListedInCsv):
    """``root/{train,test}.csv`` (file, digit, background) with the images they list.

    Labels: ``digit`` 0-9 and ``background`` 0-9 (STL-10 class for the real set, texture class
    for the synthetic one).
    """

    TITLE, KEY, CSV = "Colorful-MNIST", "colorful_mnist", "{split}.csv"
    SPLITS, COLUMNS = ("train", "test"), COLORFUL_MNIST_COLUMNS

    def labels(self, csv_path: Path, line: int, row: dict[str, str]) -> dict[str, int]:
        return {attr: _int_label(csv_path, line, attr, row[attr], 10)
                for attr in ("digit", "background")}


class FairFace(_ListedInCsv):
    """The official release: ``root/fairface_label_{train,val}.csv`` and ``root/{train,val}/``.

    Labels are indices into :data:`FAIRFACE_LABELS` (the official strings, in that order).
    """

    TITLE, KEY, CSV = "FairFace", "fairface", "fairface_label_{split}.csv"
    SPLITS, COLUMNS = ("train", "val"), FAIRFACE_COLUMNS

    def labels(self, csv_path: Path, line: int, row: dict[str, str]) -> dict[str, int]:
        labels = {}
        for attr, names in FAIRFACE_LABELS.items():
            if row[attr] not in names:
                raise DataError(f"{csv_path}, line {line}: unknown {attr} {row[attr]!r}; "
                                f"expected one of {names}")
            labels[attr] = names.index(row[attr])
        return labels


def validate_coco(path: Path, image_dir: Path, masks: bool = False) -> dict:
    """A COCO instances json checked for everything the suite, detectron2 and pycocotools read:
    the fields of every image, annotation (``segmentation`` too with ``masks``) and category,
    ids that refer to listed images and categories, and every image file. Returns the json."""
    doc = _read_json(path)
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
            _require_fields(path, item, needed, f"{key}[{i}]")
            _check_types(path, item, COCO_TYPES, f"{key}[{i}]")
            box = item.get("bbox", [0, 0, 0, 0])
            if not (isinstance(box, list) and len(box) == 4 and all(
                    isinstance(v, _NUMBER) and not isinstance(v, bool) for v in box)):
                raise DataError(f"{path}: {key}[{i}]: 'bbox' must be [x, y, width, height] "
                                f"numbers, got {box!r:.60}; repair or regenerate the file")
    empty = [k for k in ("images", "categories") if not doc[k]]
    if empty:
        raise DataError(f"{path}: no {' and no '.join(empty)}")
    image_ids, category_ids = {im["id"] for im in doc["images"]}, {c["id"] for c in
                                                                    doc["categories"]}
    orphans = [a["id"] for a in doc["annotations"]
               if a["image_id"] not in image_ids or a["category_id"] not in category_ids]
    if orphans:
        raise DataError(f"{path}: {len(orphans)} annotation(s) refer to an unknown image or "
                        f"category, e.g. ids {orphans[:5]}")
    _check_files_exist(image_dir, [im["file_name"] for im in doc["images"]], path)
    return doc


def coco_files(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation json, image folder) of ``split`` (train or val) in the COCO layout."""
    coco = _dataset_dir(root, "coco", "annotations")
    return coco / "annotations" / f"instances_{split}2017.json", coco / f"{split}2017"


class CocoObjects(_LabelledImages):
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
        self.root = _dataset_dir(root, "coco", "annotations")
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


class ImageFolderData(_LabelledImages):
    """``root/<class>/<image>``: one subfolder per class (sorted names = label order)."""

    def __init__(self, root: str | Path, transform: Transform = None):
        self.root = _require(Path(root), "image folder")
        self.transform = transform
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise DataError(f"{self.root}: no class subfolders; ImageFolder expects "
                            "root/<class>/<image> (one folder is fine for unlabelled data)")
        self.samples = []
        for label, name in enumerate(self.classes):
            files = sorted(p for p in (self.root / name).rglob("*")
                           if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DataError(f"{self.root / name}: class folder holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
            self.samples += [(p, {"class": label}) for p in files]


class MpiiLayout(NamedTuple):
    root: Path               # the MPII folder
    sizes: dict[str, int]    # people per split (train, val)


def validate_mpii(root: str | Path) -> MpiiLayout:
    """Check mmpose's MPII layout up front, everything mmpose's ``MpiiDataset`` and its PCKh
    metric will read (mmpose itself fails late and obscurely: an ``assert`` on the head-box file, a
    ``KeyError`` deep in a data-loader worker).

    ``annotations/mpii_{train,val}.json``: non-empty lists of {image, joints (16 x 2, 1-based
    pixels), joints_vis (16), center [x, y], scale (person height / 200, positive)};
    ``annotations/mpii_gt_val.mat`` with ``headboxes_src`` (2, 2, N_val) in the order of
    mpii_val.json; ``images/`` holding every listed image (names are numbers: mmpose reads the id
    from them).
    """
    root = _dataset_dir(root, "mpii", "annotations")
    sizes = {split: len(_mpii_annotations(root, split)) for split in ("train", "val")}
    mat = root / "annotations" / "mpii_gt_val.mat"
    if not mat.is_file():
        raise DataError(f"{mat}: missing head-box file; PCKh normalizes by head size, which "
                        "comes from 'headboxes_src' in mpii_gt_val.mat (MPII's evaluation file)")
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        boxes = loadmat(mat).get("headboxes_src")
    except (MatReadError, ValueError, OSError, TypeError, EOFError, zlib.error) as e:
        raise DataError(f"{mat}: not a readable MATLAB file ({' '.join(str(e).split())}); "
                        "replace it with MPII's mpii_gt_val.mat") from e
    if boxes is None or boxes.shape != (2, 2, sizes["val"]):
        found = "absent" if boxes is None else f"shape {boxes.shape}"
        raise DataError(f"{mat}: 'headboxes_src' must have shape (2, 2, {sizes['val']}) in the "
                        f"order of mpii_val.json, found {found}")
    return MpiiLayout(root, sizes)


def _mpii_annotations(root: Path, split: str) -> list[dict]:
    path = root / "annotations" / f"mpii_{split}.json"
    anns = _read_json(path)
    if not isinstance(anns, list) or not anns:
        raise DataError(f"{path}: expected a non-empty list of person annotations")
    for i, ann in enumerate(anns):
        where = f"{path}: entry {i}" + (f" ({ann['image']})" if isinstance(ann, dict)
                                        and "image" in ann else "")
        _require_fields(path, ann, ("image", "joints", "joints_vis", "center", "scale"),
                        f"entry {i}")
        _check_types(path, ann, {"image": str}, f"entry {i}")
        for key, shape in (("joints", (MPII_NUM_JOINTS, 2)), ("joints_vis", (MPII_NUM_JOINTS,)),
                           ("center", (2,))):
            try:
                value = np.asarray(ann[key], dtype=float)
            except (TypeError, ValueError):
                value = None
            if value is None or value.shape != shape:
                raise DataError(f"{where}: '{key}' must be a numeric array of shape {shape}")
        if isinstance(ann["scale"], bool) or not isinstance(ann["scale"], (int, float)) \
                or ann["scale"] <= 0:
            raise DataError(f"{where}: 'scale' must be a positive number")
        if not str(ann["image"]).split(".")[0].isdigit():
            raise DataError(f"{where}: image name {ann['image']!r} must be a number (mmpose "
                            "reads the image id from it)")
    _check_files_exist(_require(root / "images", "image folder"), [a["image"] for a in anns],
                       path)
    return anns


class _Unlabelled(Dataset):
    """Images only, ``transform(img)`` per item (the transform returns the views)."""

    def __init__(self, paths: list[Path], transform: Transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        img = load_rgb(self.paths[i])
        return self.transform(img) if self.transform else img


def _coco_images(root: Path, split: str = "train") -> list[Path]:
    ann_path, image_dir = coco_files(root, split)
    return [image_dir / im["file_name"] for im in validate_coco(ann_path, image_dir)["images"]]


def _check_coco(root: Path) -> Path:
    _coco_images(root, "val")
    return _coco_images(root, "train")[0].parent.parent


def _mpii_train_images(root: Path) -> list[Path]:
    mpii = validate_mpii(root).root
    anns = _read_json(mpii / "annotations" / "mpii_train.json")
    return [mpii / "images" / f for f in dict.fromkeys(a["image"] for a in anns)]


@dataclass(frozen=True)
class Layout:
    """A data layout the suite reads (datasets/README.md), registered under its data key."""

    check: Callable[[Path], Path]               # validates it under a root; its folder
    train_images: Callable[[Path], list[Path]]  # the train split's images (pretraining's input)


LAYOUTS = {
    "colorful_mnist": Layout(
        check=lambda root: ColorfulMNIST(ColorfulMNIST(root, "train").root, "test").root,
        train_images=lambda root: [p for p, _ in ColorfulMNIST(root, "train").samples]),
    "fairface": Layout(
        check=lambda root: FairFace(FairFace(root, "train").root, "val").root,
        train_images=lambda root: [p for p, _ in FairFace(root, "train").samples]),
    "coco": Layout(check=_check_coco, train_images=_coco_images),
    "mpii": Layout(check=lambda root: validate_mpii(root).root, train_images=_mpii_train_images),
    "voc": Layout(check=voc_layout.check, train_images=voc_layout.train_images),
    "imagefolder": Layout(check=lambda root: ImageFolderData(root).root,
                          train_images=lambda root: [p for p, _ in ImageFolderData(root).samples]),
}


def build_unlabelled(name: str, root: str | Path | None, transform: Transform) -> Dataset:
    """The pretraining set ``name`` (train split; every image for ``imagefolder``).

    ``root=None`` uses the embedded synthetic default (``pretrain.synthetic.default_root()``,
    generated on first use).
    """
    if name not in LAYOUTS:
        raise DataError(f"unknown pretraining data {name!r}; choose one of {', '.join(LAYOUTS)}")
    if root is None:
        if name == "imagefolder":
            raise DataError("imagefolder needs a root folder (root/<class>/<image>)")
        from pretrain.synthetic import default_root

        root = default_root()
    return _Unlabelled(LAYOUTS[name].train_images(Path(root)), transform)
