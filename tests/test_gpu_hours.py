"""The dry run's GPU-hours for --budget full (benchmarks/runner/gpu_hours.py), against the
published times worked out by hand here: MoCo v2 R50 at 168 images/s per V100, detectron2's model
zoo seconds per iteration on 8 V100s."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.runner import gpu_hours
from benchmarks.runner.stages import Stage

ANCHORS, CPU = gpu_hours._anchors()


def _pretrain(*flags: str) -> list[str]:
    return ["bash", "tools/pretrain.sh", "--method", "mocov2", "--regularizer", "none",
            "--arch", "resnet50", *flags]


def test_pretraining_hours_follow_moco_v2s_published_throughput(tmp_path: Path) -> None:
    # 200 epochs of 1.28M images at 168 images/s per V100: MoCo's 8 x 53 hours
    images = 1_281_167 * 200
    hours = gpu_hours.pretrain_hours(_pretrain("--steps", str(images // 256)), ANCHORS, CPU)
    assert hours == pytest.approx(images / 168 / 3600, rel=1e-3)
    assert 400 < hours < 440
    # a ResNet-18 SimCLR at 64 px: FLOPs 1.81 / 4.09, pixels (64 / 224)^2, step 1.0 / 0.65
    small = _pretrain("--steps", "1000", "--batch-size", "100", "--image-size", "64")
    small[3], small[7] = "simclr", "resnet18"
    expected = 100_000 / 168 / 3600 * 1.81 / 4.09 * (64 / 224) ** 2 * 1.0 / 0.65
    assert gpu_hours.pretrain_hours(small, ANCHORS, CPU) == pytest.approx(expected, rel=1e-6)
    # epochs over the images in the --data root (3 images, 2 epochs, batch irrelevant)
    for name in ("a.jpg", "b.PNG", "c/d.jpeg", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    by_epochs = _pretrain("--epochs", "2", "--data", f"imagefolder={tmp_path}")
    assert gpu_hours.pretrain_hours(by_epochs, ANCHORS, CPU) == pytest.approx(6 / 168 / 3600)
    empty = tmp_path / "c" / "empty"
    empty.mkdir()
    assert gpu_hours.pretrain_hours(_pretrain("--data", f"imagefolder={empty}"),
                                    ANCHORS, CPU) is None


def test_engine_hours_follow_the_model_zoo_and_unknown_stages_are_named() -> None:
    coco = Stage("b", "coco_det", ["python", "-m", "transfer.coco_det", "--config-file", "x"])
    voc = Stage("b", "voc_det", ["python", "-m", "transfer.voc_det", "--trials", "5"])
    short = Stage("b", "coco_det", [*coco.argv, "SOLVER.MAX_ITER", "9000"])
    assert gpu_hours.engine_hours("coco_det", coco.argv, ANCHORS) == pytest.approx(116.8)
    assert gpu_hours.engine_hours("voc_det", voc.argv, ANCHORS) == pytest.approx(143.2)
    assert gpu_hours.engine_hours("coco_det", short.argv, ANCHORS) == pytest.approx(11.68)
    pose = Stage("b", "mpii_fixed", ["python", "-m", "transfer.mpii_pose"])
    line = gpu_hours.estimate_line([coco, voc, pose, pose])
    assert "about 260 V100-hours" in line and "coco_det 117, voc_det 143" in line
    assert line.endswith("no published time, not counted: mpii_fixed x2")
