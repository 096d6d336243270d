"""The registry of data layouts the suite reads (by data key) and pretraining's unlabelled set.

Adding a layout: its reader module in this package and one line in :data:`LAYOUTS`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from pretrain.data.coco import coco_files, validate_coco
from pretrain.data.files import DataError, load_rgb, read_json
from pretrain.data.labelled import ColorfulMNIST, FairFace, ImageFolderData, Transform
from pretrain.data.mpii import validate_mpii
from pretrain.data.voc import check as check_voc
from pretrain.data.voc import train_images as voc_train_images


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
    anns = read_json(mpii / "annotations" / "mpii_train.json")
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
    "voc": Layout(check=check_voc, train_images=voc_train_images),
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
