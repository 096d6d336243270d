"""The synthetic generator and the readers: layouts, determinism, labels, and bad input."""
from __future__ import annotations

import csv
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pretrain import synthetic
from pretrain.data import (
    FAIRFACE_LABELS,
    ICL_MSR_CATEGORIES,
    CocoObjects,
    ColorfulMNIST,
    DataError,
    FairFace,
    ImageFolderData,
    build_unlabelled,
    validate_mpii,
)
from transfer import compat  # noqa: F401  (applies its shims before detectron2/mmpose)

REPO = Path(__file__).resolve().parent.parent
# Real COCO ids of the ICL-MSR categories (from instances_val2017.json).
COCO_IDS = {"airplane": 5, "banana": 52, "bear": 23, "bed": 65, "bench": 15, "bird": 16, "boat": 9,
            "broccoli": 56, "bus": 6, "cat": 17, "clock": 85, "cow": 21, "dog": 18,
            "elephant": 22, "fire hydrant": 11, "giraffe": 25, "horse": 19, "motorcycle": 4,
            "person": 1, "pizza": 59, "scissors": 87, "sink": 81, "stop sign": 13,
            "teddy bear": 88, "toilet": 70, "traffic light": 10, "train": 7, "truck": 8,
            "vase": 86, "zebra": 24}


def _copy(tiny: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny / name, tmp_path / name))


def test_generate_is_deterministic_by_seed(tiny_data, tmp_path):
    again = synthetic.generate(tmp_path / "again", size="tiny", seed=0)
    cmp = filecmp.dircmp(tiny_data, again)
    mismatched = []

    def walk(c: filecmp.dircmp) -> None:
        _, bad, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        mismatched.extend(bad + errors + c.left_only + c.right_only)
        for sub in c.subdirs.values():
            walk(sub)

    walk(cmp)
    assert not mismatched
    other = tmp_path / "seed1"
    synthetic.colorful_mnist.generate(other, 40, 20, seed=1)
    assert (other / "train.csv").read_text() != (tiny_data / "colorful_mnist/train.csv").read_text()


def test_colorful_mnist_reader(tiny_data):
    train, test = ColorfulMNIST(tiny_data / "colorful_mnist"), ColorfulMNIST(tiny_data, "test")
    assert (len(train), len(test)) == synthetic.colorful_mnist.IMAGES["tiny"]
    img, labels = train[0]
    assert img.mode == "RGB" and img.size == (64, 64)
    assert set(labels) == {"digit", "background"}
    digits = {lab["digit"] for _, lab in train.samples}
    backgrounds = {lab["background"] for _, lab in train.samples}
    assert digits <= set(range(10)) and len(digits) >= 5
    assert backgrounds <= set(range(10)) and len(backgrounds) >= 5


def test_colorful_mnist_train_and_test_use_disjoint_source_digits():
    images, _ = synthetic.colorful_mnist._sklearn_digits(seed=0)
    train = {d.tobytes() for d in images["train"]}
    assert len(images["train"]) == synthetic.colorful_mnist.N_TRAIN_SOURCE_DIGITS
    assert not any(d.tobytes() in train for d in images["test"])


def test_fairface_csv_has_official_columns_and_strings(tiny_data):
    assert FAIRFACE_LABELS == {
        "age": ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69",
                "more than 70"],
        "gender": ["Male", "Female"],
        "race": ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
                 "Middle Eastern"]}
    for split in ("train", "val"):
        with open(tiny_data / f"fairface/fairface_label_{split}.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["file", "age", "gender", "race", "service_test"]
        for file, age, gender, race, service_test in rows[1:]:
            assert file.startswith(f"{split}/") and file.endswith(".jpg")
            assert age in FAIRFACE_LABELS["age"] and gender in FAIRFACE_LABELS["gender"]
            assert race in FAIRFACE_LABELS["race"] and service_test in ("True", "False")
    ds = FairFace(tiny_data / "fairface", "val")
    img, labels = ds[0]
    assert img.size == (64, 64) and set(labels) == {"age", "gender", "race"}


def test_coco_json_loads_in_pycocotools_and_every_mask_decodes(tiny_data):
    from pycocotools.coco import COCO

    several = 0
    for split in ("train2017", "val2017"):
        coco = COCO(str(tiny_data / f"coco/annotations/instances_{split}.json"))
        for cat in coco.loadCats(coco.getCatIds()):
            assert COCO_IDS[cat["name"]] == cat["id"]  # real COCO names and ids
        for img_id in coco.getImgIds():
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            several += len(anns) > 1
            for ann in anns:
                mask = coco.annToMask(ann)
                assert mask.shape == (coco.imgs[img_id]["height"], coco.imgs[img_id]["width"])
                assert ann["iscrowd"] == 0
                assert abs(mask.sum() - ann["area"]) < 0.1 * ann["area"] + 20
    assert several > 0


def test_coco_background_is_correlated_with_category():
    rng = np.random.default_rng(0)
    home = 0
    for _ in range(200):
        scene = synthetic.coco._coco_scene_choice(synthetic.coco.COCO_CATEGORIES[3], rng)
        home += scene == synthetic.coco.COCO_CATEGORIES[3].scene
    assert 0.7 < home / 200 < 0.95


def test_detectron2_registers_records_with_masks(tiny_data):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    name = f"test_data_synthetic_val_{os.getpid()}"
    register_coco_instances(name, {}, str(tiny_data / "coco/annotations/instances_val2017.json"),
                            str(tiny_data / "coco/val2017"))
    records = DatasetCatalog.get(name)
    assert len(records) == synthetic.coco.IMAGES["tiny"][1]
    assert all(Path(r["file_name"]).is_file() for r in records)
    anns = [a for r in records for a in r["annotations"]]
    assert anns and all(a["segmentation"] and len(a["segmentation"][0]) >= 6 for a in anns)
    assert MetadataCatalog.get(name).thing_classes == [c.name for c in
                                                       synthetic.coco.COCO_CATEGORIES]


def test_mmpose_mpii_dataset_loads_with_head_boxes(tiny_data):
    from mmpose.datasets import MpiiDataset

    root = tiny_data / "mpii"
    assert validate_mpii(tiny_data) == (root, {"train": 16, "val": 8})
    ds = MpiiDataset(ann_file="annotations/mpii_val.json", data_root=str(root),
                     data_prefix=dict(img="images/"), data_mode="topdown", test_mode=True,
                     headbox_file=str(root / "annotations/mpii_gt_val.mat"), pipeline=[])
    assert len(ds) == synthetic.mpii.IMAGES["tiny"][1]
    item = ds[0]
    assert item["keypoints"].shape == (1, 16, 2)
    assert item["head_size"].item() > 4
    assert Path(item["img_path"]).is_file()
    # joints are 1-based pixel coordinates inside the 128 px image
    anns = json.loads((root / "annotations/mpii_val.json").read_text())
    joints = np.array([a["joints"] for a in anns])
    assert joints.min() >= 1 and joints.max() <= synthetic.mpii.MPII_SIZE
    assert any(0 in a["joints_vis"] for a in anns + json.loads(
        (root / "annotations/mpii_train.json").read_text()))


def test_coco_objects_full_and_foreground(tiny_data):
    assert len(ICL_MSR_CATEGORIES) == len(set(ICL_MSR_CATEGORIES)) == 30
    assert all(c.name in ICL_MSR_CATEGORIES for c in synthetic.coco.COCO_CATEGORIES)
    full = CocoObjects(tiny_data / "coco", "train", view="full")
    fg = CocoObjects(tiny_data / "coco", "train", view="foreground")
    doc = json.loads((tiny_data / "coco/annotations/instances_train2017.json").read_text())
    per_image = {}
    for a in doc["annotations"]:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    assert len(full) == sum(n == 1 for n in per_image.values())
    (img, lab), (crop, lab_fg) = full[0], fg[0]
    assert lab == lab_fg and ICL_MSR_CATEGORIES[lab["category"]] in full.present
    x, y, w, h = full.boxes[0]
    assert img.size in ((128, 128), (128, 160), (160, 128), (160, 160))
    assert abs(crop.size[0] - w) <= 2 and abs(crop.size[1] - h) <= 2


def test_imagefolder_reader(tiny_data, tmp_path):
    for i, src in enumerate(sorted((tiny_data / "colorful_mnist/train").iterdir())[:6]):
        (tmp_path / f"class{i % 2}").mkdir(exist_ok=True)
        shutil.copy(src, tmp_path / f"class{i % 2}" / src.name)
    ds = ImageFolderData(tmp_path)
    assert ds.classes == ["class0", "class1"] and len(ds) == 6
    assert ds[5][1] == {"class": 1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        ImageFolderData(tmp_path)


def test_build_unlabelled_applies_the_transform(tiny_data):
    expected = {"colorful_mnist": 40, "fairface": 40, "coco": 16, "mpii": 16}
    for name, n in expected.items():
        ds = build_unlabelled(name, tiny_data, lambda img: (img.size, img.size))
        assert len(ds) == n
        assert isinstance(ds[0], tuple) and len(ds[0]) == 2
    with pytest.raises(DataError, match="unknown pretraining data"):
        build_unlabelled("imagenet", tiny_data, None)


def test_build_unlabelled_defaults_to_the_embedded_set(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path))
    # a pre-placed set stands in for the (slower to generate) default size
    shutil.copytree(tiny_data, tmp_path / "synthetic-default-seed0")
    assert len(build_unlabelled("fairface", None, None)) == 40


def test_default_root_generates_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path))
    code = ("from pretrain.synthetic import default_root; "
            "print(default_root('tiny', seed=3))")
    env = {**os.environ, "SUITE_DATA_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    root = tmp_path / "synthetic-tiny-seed3"
    assert outs == [str(root)] * 2
    assert sorted(p.name for p in root.iterdir()) == sorted(synthetic.GENERATORS)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    stamp = (root / "colorful_mnist/train.csv").stat().st_mtime_ns
    assert synthetic.default_root("tiny", seed=3) == root
    assert (root / "colorful_mnist/train.csv").stat().st_mtime_ns == stamp


# ---- bad input: every error names the file -------------------------------------------------
def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ColorfulMNIST(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"train\.csv"):
        ColorfulMNIST(tmp_path)
    (tmp_path / "coco/annotations").mkdir(parents=True)
    with pytest.raises(DataError, match=r"instances_train2017\.json: missing annotation file"):
        CocoObjects(tmp_path / "coco")


def test_missing_image_listed_in_csv_is_named(tiny_data, tmp_path):
    root = _copy(tiny_data, "fairface", tmp_path)
    (root / "val/3.jpg").unlink()
    with pytest.raises(DataError, match=r"fairface_label_val\.csv.*val/3\.jpg"):
        FairFace(root, "val")


def test_corrupt_image_is_named_when_read(tiny_data, tmp_path):
    root = _copy(tiny_data, "colorful_mnist", tmp_path)
    (root / "test/00002.png").write_bytes(b"not a png at all")
    ds = ColorfulMNIST(root, "test")
    ds[1]
    with pytest.raises(DataError, match=r"test/00002\.png.*corrupt"):
        ds[2]


def test_unknown_label_string_and_missing_column_are_named(tiny_data, tmp_path):
    root = _copy(tiny_data, "fairface", tmp_path)
    path = root / "fairface_label_train.csv"
    text = path.read_text()
    path.write_text(text.replace(",Male,", ",male,", 1))
    with pytest.raises(DataError, match=r"fairface_label_train\.csv, line \d+: unknown gender"):
        FairFace(root)
    path.write_text(text.replace("service_test", "service"))
    with pytest.raises(DataError, match="missing column.*service_test"):
        FairFace(root)


def test_coco_json_missing_field_is_named(tiny_data, tmp_path):
    root = _copy(tiny_data, "coco", tmp_path)
    path = root / "annotations/instances_val2017.json"
    doc = json.loads(path.read_text())
    del doc["annotations"][0]["bbox"]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"instances_val2017\.json.*lacks field\(s\) bbox"):
        CocoObjects(root, "val")
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"instances_val2017\.json: not valid JSON"):
        CocoObjects(root, "val")


def test_mpii_layout_errors_are_named(tiny_data, tmp_path):
    from scipy.io import savemat

    root = _copy(tiny_data, "mpii", tmp_path)
    path = root / "annotations/mpii_train.json"
    anns = json.loads(path.read_text())
    anns[0]["joints"] = anns[0]["joints"][:15]
    path.write_text(json.dumps(anns))
    with pytest.raises(DataError, match=r"mpii_train\.json: entry 0 .*'joints' must be a numeric "
                                        r"array of shape \(16, 2\)"):
        validate_mpii(root)
    del anns[0]["joints_vis"]
    path.write_text(json.dumps(anns))
    with pytest.raises(DataError, match=r"mpii_train\.json.*lacks field\(s\) joints_vis"):
        validate_mpii(root)
    for key, value, message in (("scale", 0, "'scale' must be a positive number"),
                                ("image", "person.jpg", "must be a number"),
                                ("image", "999999999.jpg", "1 image file(s) it lists are missing")):
        broken = json.loads((tiny_data / "mpii/annotations/mpii_train.json").read_text())
        broken[1][key] = value
        path.write_text(json.dumps(broken))
        with pytest.raises(DataError, match=r"mpii_train\.json: .*" + re.escape(message)):
            validate_mpii(root)
    shutil.copy(tiny_data / "mpii/annotations/mpii_train.json", path)
    savemat(root / "annotations/mpii_gt_val.mat", {"headboxes_src": np.zeros((2, 2, 3))})
    with pytest.raises(DataError, match=r"mpii_gt_val\.mat: 'headboxes_src' must have shape"):
        validate_mpii(root)
    (root / "annotations/mpii_gt_val.mat").unlink()
    with pytest.raises(DataError, match=r"mpii_gt_val\.mat: missing head-box file"):
        validate_mpii(root)
