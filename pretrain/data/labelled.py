"""The readers of labelled image sets: Colorful-MNIST and FairFace (one CSV per split listing the
images and their labels) and ImageFolder (one subfolder per class).

Items are ``(PIL RGB image or transform(image), labels dict)``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image
from torch.utils.data import Dataset

from pretrain.data.files import (
    IMAGE_EXTENSIONS,
    DataError,
    check_files_exist,
    dataset_dir,
    load_rgb,
    read_csv,
    require,
)

FAIRFACE_LABELS = {
    "age": ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"],
    "gender": ["Male", "Female"],
    "race": ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
             "Middle Eastern"],
}
FAIRFACE_COLUMNS = ("file", "age", "gender", "race", "service_test")
COLORFUL_MNIST_COLUMNS = ("file", "digit", "background")

Transform = Callable[[Image.Image], Any] | None


def _int_label(path: Path, line: int, column: str, value: str, n: int) -> int:
    try:
        label = int(value)
    except ValueError:
        label = -1
    if not 0 <= label < n:
        raise DataError(f"{path}, line {line}: {column} must be an integer in 0..{n - 1}, "
                        f"got {value!r}")
    return label


class LabelledImages(Dataset):
    """(image path, labels) pairs; subclasses fill ``self.samples`` after validating."""

    samples: list[tuple[Path, dict[str, int]]]
    transform: Transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, dict[str, int]]:
        path, labels = self.samples[i]
        img = load_rgb(path)
        return (self.transform(img) if self.transform else img), dict(labels)


class _ListedInCsv(LabelledImages):
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
        self.root = dataset_dir(root, self.KEY, csv_name)
        self.transform = transform
        csv_path = self.root / csv_name
        rows = read_csv(csv_path, self.COLUMNS)
        self.samples = [(self.root / row["file"], self.labels(csv_path, line, row))
                        for line, row in enumerate(rows, start=2)]
        check_files_exist(self.root, [row["file"] for row in rows], csv_path)

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


class ImageFolderData(LabelledImages):
    """``root/<class>/<image>``: one subfolder per class (sorted names = label order)."""

    def __init__(self, root: str | Path, transform: Transform = None):
        self.root = require(Path(root), "image folder")
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


