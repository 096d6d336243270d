"""Hostile data folders (issues 27 and 30): a FIFO or device where an image or annotation file
should be, listed paths that leave the data folder, and COCO ids detectron2 or pycocotools cannot
use. Each is one DataError naming the file, raised at once (no read waits on a FIFO)."""
from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pretrain.data import ColorfulMNIST, DataError, ImageFolderData, load_rgb, validate_coco

pytestmark = pytest.mark.reliability


@contextmanager
def _no_hang(seconds: int = 20) -> Iterator[None]:
    """Fail (rather than hang the suite) when the block blocks for ``seconds``."""
    def hung(*_: object) -> None:
        raise AssertionError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _colorful_copy(tiny_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "colorful_mnist"
    shutil.copytree(tiny_data / "colorful_mnist", root)
    return root


def test_a_fifo_image_is_refused_without_waiting(tiny_data: Path, tmp_path: Path) -> None:
    root = _colorful_copy(tiny_data, tmp_path)
    image = root / "train" / "00000.png"
    image.unlink()
    os.mkfifo(image)
    with _no_hang(), pytest.raises(DataError, match="00000.png: is a FIFO"):
        load_rgb(image)
    with _no_hang(), pytest.raises(DataError, match="train.csv: 1 listed file.*not regular.*"
                                                     "00000.png"):
        ColorfulMNIST(root, "train")
    folder = tmp_path / "folder" / "class"  # ImageFolder lists what it finds: refused when read
    folder.mkdir(parents=True)
    os.mkfifo(folder / "a.png")
    data = ImageFolderData(tmp_path / "folder")
    with _no_hang(), pytest.raises(DataError, match="a.png: is a FIFO"):
        data[0]
    with _no_hang(), pytest.raises(DataError, match="/dev/zero: is a device"):
        load_rgb(Path("/dev/zero"))


def test_a_fifo_label_file_is_refused_without_waiting(tiny_data: Path, tmp_path: Path) -> None:
    root = _colorful_copy(tiny_data, tmp_path)
    (root / "test.csv").unlink()
    os.mkfifo(root / "test.csv")
    with _no_hang(), pytest.raises(DataError, match="test.csv: is a FIFO"):
        ColorfulMNIST(root, "test")


@pytest.mark.parametrize("escape", ["absolute", "dotdot"])
def test_listed_paths_that_leave_the_data_folder_are_refused(
        tiny_data: Path, tmp_path: Path, escape: str) -> None:
    root = _colorful_copy(tiny_data, tmp_path)
    outside = tmp_path / "outside.png"
    shutil.copy(root / "train" / "00000.png", outside)
    name = str(outside) if escape == "absolute" else "../outside.png"
    rows = (root / "train.csv").read_text().splitlines()
    rows[1] = f"{name},5,8"
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="train.csv: 1 listed path.*leave the data folder"):
        ColorfulMNIST(root, "train")
    coco = tiny_data / "coco"
    doc = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    doc["images"][0]["file_name"] = "../train2017/" + doc["images"][0]["file_name"]
    (tmp_path / "escape.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="escape.json: 1 listed path.*leave the data folder"):
        validate_coco(tmp_path / "escape.json", coco / "val2017")


@pytest.mark.parametrize("fault", ["duplicate annotation id", "duplicate image id",
                                   "annotation id 0", "no annotations"])
def test_coco_ids_detectron2_and_pycocotools_cannot_use_are_refused(
        tiny_data: Path, tmp_path: Path, fault: str) -> None:
    coco = tiny_data / "coco"
    doc = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    anns, images = doc["annotations"], doc["images"]
    match = {"duplicate annotation id": "id.* of annotations repeat",
             "duplicate image id": "id.* of images repeat",
             "annotation id 0": r"annotation id\(s\) \[0\] below 1",
             "no annotations": "no annotations"}[fault]
    if fault == "duplicate annotation id":
        anns[1]["id"] = anns[0]["id"]
    elif fault == "duplicate image id":
        images[1]["id"] = images[0]["id"]
    elif fault == "annotation id 0":
        anns[0]["id"] = 0
    else:
        doc["annotations"] = []
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=f"bad.json: .*{match}"):
        validate_coco(tmp_path / "bad.json", coco / "val2017")
