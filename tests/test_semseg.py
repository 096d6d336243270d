"""transfer/semseg.py: Semantic FPN on the tiny synthetic VOC 2012 layout end to end (real
detectron2, its DatasetMapper and SemSegEvaluator), the label rewrite and its checks, and the
augmented set's layout."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrain.data import voc as voc_layout
from pretrain.data.voc import VocLayoutError
from transfer import semseg

SHORT = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
         "SOLVER.STEPS", "()"]


@pytest.mark.slow
def test_weights_to_miou_end_to_end_and_eval_only(tiny_data: Path, tmp_path: Path) -> None:
    out, board = tmp_path / "run", tmp_path / "board.csv"
    common = ["--data", str(tiny_data / "voc"), "--out", str(out), "--leaderboard", str(board)]
    assert semseg.main(["--weights", "random", "--arch", "resnet18", *common, *SHORT]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["sem_seg"]
    assert 0 <= metrics["mIoU"] <= 100 and 0 <= metrics["pACC"] <= 100
    assert metrics["IoU-dog"] is None  # no dog anywhere: undefined, kept as null
    assert "IoU-person" in metrics and "ACC-background" in metrics
    with open(board) as f:
        rows = list(csv.DictReader(f))
    assert {r["metric"] for r in rows} == {"sem_seg_mIoU", "sem_seg_pACC", "sem_seg_mACC",
                                           "sem_seg_fwIoU"}
    assert {(r["task"], r["recipe"]) for r in rows} == {("semseg", "voc_semseg_cpu_FPN_128px")}
    (out / "metrics.json").unlink()
    assert semseg.main([*common, "--eval-only"]) == 0
    assert json.loads((out / "metrics.json").read_text())["metrics"]["sem_seg"] == metrics


def test_palette_labels_are_rewritten_grey_with_their_indices(tiny_data: Path,
                                                             tmp_path: Path) -> None:
    settings = semseg.parse_args(["--weights", "random", "--data", str(tiny_data / "voc"),
                                  "--out", str(tmp_path)])
    info = semseg.Trainer.check_data(settings)
    semseg.Trainer.prepare_data(settings, info)
    image_id = info["val"][0][0]
    palette = Image.open(voc_layout.devkit(tiny_data) / "VOC2012" / "SegmentationClass"
                         / f"{image_id}.png")
    grey = Image.open(tmp_path / semseg.LABELS / f"{image_id}.png")
    assert palette.mode == "P" and grey.mode == "L"
    assert np.array_equal(np.asarray(grey), np.asarray(palette))
    assert np.array_equal(np.asarray(palette.convert("L")) == np.asarray(grey),
                          np.asarray(grey) == 0)  # what a greyscale read would have made


def test_a_label_value_that_is_no_class_is_named(tiny_data: Path, tmp_path: Path) -> None:
    voc = Path(shutil.copytree(tiny_data / "voc", tmp_path / "voc"))
    settings = semseg.parse_args(["--weights", "random", "--data", str(voc),
                                  "--out", str(tmp_path / "run")])
    (tmp_path / "run").mkdir()
    info = semseg.Trainer.check_data(settings)
    image_id = info["train"][0][0]
    Image.fromarray(np.full((160, 160), 77, np.uint8), "L").resize(
        Image.open(voc / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{image_id}.jpg").size).save(
        voc / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{image_id}.png")
    with pytest.raises(VocLayoutError, match=rf"{image_id}.png: label values \[77\] are not"):
        semseg.Trainer.prepare_data(settings, info)


def test_the_augmented_set_trains_where_it_is_laid_out(tiny_data: Path, tmp_path: Path) -> None:
    voc = Path(shutil.copytree(tiny_data / "voc", tmp_path / "voc"))
    assert voc_layout.segmentation_training_set(voc) == ("train", "SegmentationClass")
    year = voc / "VOCdevkit" / "VOC2012"
    shutil.copytree(year / "SegmentationClass", year / voc_layout.AUG_LABELS)
    shutil.copy(year / "ImageSets/Segmentation/train.txt", year / "ImageSets/Segmentation/aug.txt")
    assert voc_layout.segmentation_training_set(voc) == ("aug", voc_layout.AUG_LABELS)
    settings = semseg.parse_args(["--weights", "random", "--data", str(voc)])
    assert semseg.Trainer.check_data(settings)["train"][1] == voc_layout.AUG_LABELS
