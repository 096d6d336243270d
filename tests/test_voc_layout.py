"""pretrain/data/voc.py and pretrain/synthetic/voc.py: the synthetic set in VOC's official
layout (read by detectron2's own reader), its shortcut, and the validator's named errors."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrain.data import LAYOUTS
from pretrain.data import voc as voc_layout
from pretrain.data.voc import VocLayoutError
from pretrain.synthetic import voc as synthetic_voc
from transfer import compat  # noqa: F401  (shims; before any detectron2 import)


def _copy(tiny_data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_data / "voc", tmp_path / "voc")) / "VOCdevkit"


def test_synthetic_set_is_read_by_detectron2s_voc_reader(tiny_data: Path) -> None:
    from detectron2.data.datasets.pascal_voc import load_voc_instances

    classes = voc_layout.detection_classes(tiny_data)
    assert classes == ["aeroplane", "bottle", "bus", "cat", "person"]  # VOC's order
    base = voc_layout.devkit(tiny_data)
    dicts = load_voc_instances(str(base / "VOC2007"), "test", classes)
    assert len(dicts) == synthetic_voc.IMAGES["tiny"][1]
    for record in dicts:
        with Image.open(record["file_name"]) as img:
            assert img.size == (record["width"], record["height"])
        for obj in record["annotations"]:
            x0, y0, x1, y1 = obj["bbox"]
            assert 0 <= x0 < x1 <= record["width"] and 0 <= y0 < y1 <= record["height"]
    assert LAYOUTS["voc"].check(tiny_data / "voc") == base
    assert len(LAYOUTS["voc"].train_images(tiny_data)) == synthetic_voc.IMAGES["tiny"][0]


def test_segmentation_labels_are_voc_palette_pngs_with_borders_ignored(tiny_data: Path) -> None:
    ids = voc_layout.validate_segmentation(tiny_data, "train")
    label = Image.open(voc_layout.devkit(tiny_data) / "VOC2012" / "SegmentationClass"
                       / f"{ids[0]}.png")
    values = set(np.unique(np.array(label)).tolist())
    assert label.mode == "P" and label.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC's colours
    assert {0, voc_layout.IGNORE_LABEL} < values <= {0, 255, *range(1, 21)}


def test_background_predicts_the_class_in_training_only(tmp_path: Path) -> None:
    root = synthetic_voc.generate(tmp_path, 60, 60, seed=1)
    with open(root / "shortcut.csv") as f:
        rows = list(csv.DictReader(f))
    train = [int(r["home_scene"]) for r in rows if "trainval" in r["split"]]
    test = [int(r["home_scene"]) for r in rows if r["split"] == "VOC2007/Main/test"]
    home = [int(r["home_scene"]) for r in rows if r["split"] == "VOC2007/Main/test_home"]
    assert np.mean(train) > 0.8 and np.mean(test) < 0.3  # 0.9 and 1/10 expected
    assert len(home) == 30 and np.mean(home) > 0.8  # drawn as the training images are
    assert (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text() == (
        synthetic_voc.generate(tmp_path / "again", 60, 60, seed=1) / "VOCdevkit" / "VOC2007"
        / "ImageSets" / "Main" / "test.txt").read_text()


def test_validator_names_each_broken_file(tiny_data: Path, tmp_path: Path) -> None:
    base = _copy(tiny_data, tmp_path)
    year = base / "VOC2007"
    first = (year / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    xml = year / "Annotations" / f"{first}.xml"
    good = xml.read_text()

    def broken(text: str, match: str) -> None:
        xml.write_text(text)
        with pytest.raises(VocLayoutError, match=match):
            voc_layout.detection_classes(base)
        xml.write_text(good)

    broken(good.replace("<name>", "<name>x", 1), rf"{first}.xml: object 0 has class 'x")
    broken(good.replace("<xmin>", "<xmin>1.5", 1), r"<xmin> is '1.5.*', not an integer")
    broken(good.replace("<xmax>", "<xmax>900", 1), "object 0's box .* is not inside the")
    broken(good.replace("<difficult>0</difficult>", "", 1), "<difficult> is None")
    broken(good[:-20], f"{first}.xml: not valid XML")
    broken(good.replace("<size>", "<sise>").replace("</size>", "</sise>"), "no <size>")
    (year / "JPEGImages" / f"{first}.jpg").unlink()
    with pytest.raises(VocLayoutError, match=f"{first}.jpg: image missing"):
        voc_layout.detection_classes(base)
    (year / "ImageSets" / "Main" / "test.txt").write_text(f"{first}\n")
    with pytest.raises(VocLayoutError, match="test.txt: lists 1 image"):
        voc_layout.detection_classes(base)
    (year / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(VocLayoutError, match="test.txt: image list missing"):
        voc_layout.detection_classes(base)
    with pytest.raises(VocLayoutError, match="no VOCdevkit/VOC2007 or VOC2012"):
        voc_layout.devkit(tmp_path / "nowhere")


def test_a_class_without_test_objects_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    """Its AP would be undefined (no positives), and so would the mean."""
    base = _copy(tiny_data, tmp_path)
    test = base / "VOC2007" / "ImageSets" / "Main" / "test.txt"
    keep = [i for i in test.read_text().split() if "person" not in
            (base / "VOC2007" / "Annotations" / f"{i}.xml").read_text()]
    test.write_text("\n".join(keep) + "\n")
    with pytest.raises(VocLayoutError, match="no object of person in the test split"):
        voc_layout.detection_classes(base)


def test_segmentation_label_of_the_wrong_size_is_named(tiny_data: Path, tmp_path: Path) -> None:
    base = _copy(tiny_data, tmp_path)
    image_id = voc_layout.validate_segmentation(base, "val")[0]
    label = base / "VOC2012" / "SegmentationClass" / f"{image_id}.png"
    Image.new("P", (7, 7)).save(label)
    with pytest.raises(VocLayoutError, match=f"{image_id}.png: label of size .7, 7. for an image"):
        voc_layout.validate_segmentation(base, "val")
    label.unlink()
    with pytest.raises(VocLayoutError, match=f"{image_id}.png: label PNG missing"):
        voc_layout.validate_segmentation(base, "val")
