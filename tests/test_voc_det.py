"""transfer/voc_det.py: Faster R-CNN on the tiny synthetic VOC layout end to end (real
detectron2, its VOC reader and PascalVOCDetectionEvaluator), trials, the conversion and load
guard in MoCo's C4 model, the CPU refusal, and a 2-process gloo run."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.results.gaps import gap_of
from pretrain.open_backbone import open_backbone
from transfer import detectron2_driver as driver
from transfer import voc_det
from transfer.detectron2_driver import DriverError

REPO = Path(__file__).resolve().parent.parent
SHORT = ["SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
         "SOLVER.STEPS", "()", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def test_gpus_is_the_launcher_flag_and_num_gpus_its_alias(tmp_path: Path) -> None:
    for flag in ("--gpus", "--num-gpus"):
        settings = voc_det.parse_args(["--weights", "random", flag, "2", "--data", str(tmp_path)])
        assert settings.num_gpus == 2 and settings.trials == 1 and settings.arch == "resnet50"
    assert voc_det.parse_args(["--weights", "random", "--trials", "5", "--data",
                               str(tmp_path)]).trials == 5


@pytest.mark.slow
def test_two_trials_train_score_and_report_mean_and_interval(tiny_data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture
                                                             ) -> None:
    out, board = tmp_path / "run", tmp_path / "board.csv"
    common = ["--data", str(tiny_data / "voc"), "--leaderboard", str(board), "--arch",
              "resnet18"]
    assert voc_det.main(["--weights", "random", *common, "--out", str(out), "--trials", "2",
                         *SHORT]) == 0
    trials = json.loads((out / voc_det.TRIALS_FILE).read_text())
    assert trials["seeds"] == [0, 1] and set(trials["metrics"]) == {"AP50", "AP", "AP75"}
    for stat in trials["metrics"].values():
        assert stat["mean"] == pytest.approx(sum(stat["values"]) / 2)
        assert stat["low"] <= stat["mean"] <= stat["high"] and 0 <= stat["mean"] <= 100
    with open(board) as f:
        rows = list(csv.DictReader(f))
    assert {(r["task"], r["recipe"], r["seed"]) for r in rows} == {
        ("voc_det", "voc_cpu_FPN_128px", "0"), ("voc_det", "voc_cpu_FPN_128px", "1")}
    # the synthetic set's home-scene test images are scored beside the test set: the shortcut gap
    assert {r["metric"] for r in rows} == {f"{group}_{name}" for group in ("bbox", "home_bbox")
                                           for name in ("AP50", "AP", "AP75")}
    assert gap_of("voc_det").of({r["metric"]: float(r["value"]) for r in rows if r["seed"] == "0"}
                                ) is not None
    first = json.loads((out / "seed0" / "metrics.json").read_text())
    assert first["metrics"]["bbox"]["AP50"] == trials["metrics"]["AP50"]["values"][0]
    assert "Evaluating suite_voc_2007_test using 2007 metric" in (
        out / "seed0" / "log.txt").read_text()
    assert "seed1" not in (out / "seed0" / "log.txt").read_text()  # each trial logs on its own
    printed = capsys.readouterr().out
    assert '"trials": 2' in printed

    (out / "seed0" / "metrics.json").unlink()
    assert voc_det.main([*common, "--out", str(out / "seed0"), "--eval-only",
                         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]) == 0
    again = json.loads((out / "seed0" / "metrics.json").read_text())
    assert again["metrics"] == first["metrics"]  # the trained model, evaluated again


def test_c4_recipe_holds_the_converted_backbone_and_the_guard_names_a_wrong_tensor(
        tmp_path: Path) -> None:
    """MoCo's VOC model (R50-C4, res5 + extra BN in the ROI head, naiveSyncBN): the conversion is
    verified with the run's config and every converted tensor lands where it was written."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.layers import NaiveSyncBatchNorm

    settings = voc_det.parse_args(["--weights", "random", "--config-file", str(voc_det.C4_CONFIG),
                                   "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    backbone = open_backbone("random", "resnet50", "imagenet", 0)
    (tmp_path / "run").mkdir()
    record = {"meta": backbone.meta, "converted": str(tmp_path / "run" / driver.BACKBONE_FILE)}
    cfg = driver.setup_cfg(voc_det.Trainer, settings, record,
                           {"classes": ["cat", "dog"], "splits": ("train", "test")})
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2 and not cfg.MODEL.MASK_ON
    driver.prepare_backbone(settings, backbone, cfg)
    model = voc_det.Trainer.build_model(cfg)
    assert isinstance(model.roi_heads.res5.norm, NaiveSyncBatchNorm)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    assert driver.check_loaded(model, cfg.MODEL.WEIGHTS) == 265
    with torch.no_grad():
        model.roi_heads.res5[1].conv2.weight[0, 0] += 1.0
    with pytest.raises(DriverError, match="1 of its 265 tensors .*roi_heads.res5.1.conv2.weight"):
        driver.check_loaded(model, cfg.MODEL.WEIGHTS)


def test_mocos_recipe_on_a_cpu_is_refused_in_one_line(tiny_data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without a GPU")
    monkeypatch.setattr(driver, "prepare_backbone", lambda *a: pytest.fail("it converted"))
    out = tmp_path / "run"
    assert voc_det.main(["--weights", "random", "--data", str(tiny_data / "voc"),
                         "--config-file", str(voc_det.C4_CONFIG), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pascal_voc_R_50_C4_24k_moco.yaml is a GPU recipe (16 images" in err
    assert "--config-file transfer/configs/voc_cpu_FPN_128px.yaml" in err
    assert len(err.splitlines()) == 1 and not out.exists()
    assert voc_det.main(["--weights", "random", "--data", str(tmp_path / "nowhere"),
                         "--out", str(out)]) == 2
    assert "no VOCdevkit/VOC2007 or VOC2012" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_gloo_run(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "transfer.voc_det", "--gpus", "2", "--weights",
         "random", "--arch", "resnet18", "--data", str(tiny_data / "voc"), "--out", str(out),
         "--leaderboard", str(tmp_path / "board.csv"), *SHORT, "SOLVER.IMS_PER_BATCH", "4"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (out / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 2" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["metrics"]["bbox"]) == {"AP", "AP50", "AP75"}
    assert '"bbox"' in done.stdout and (tmp_path / "board.csv").is_file()


def test_reference_rows_sit_beside_the_recipe_they_were_published_with() -> None:
    from benchmarks.results.leaderboard import reference_rows

    published = {r["recipe"] for r in reference_rows() if r["task"] == voc_det.Trainer.TASK}
    assert published == {voc_det.Trainer.RECIPES[voc_det.C4_CONFIG.stem]} == {"R50-C4-24k"}
