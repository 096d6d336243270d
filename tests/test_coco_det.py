"""transfer/coco_det.py: configs, data checks, and detectron2 training + COCO evaluation end to
end on the tiny synthetic COCO set (real detectron2, real pycocotools)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from pretrain.backbones import build_resnet
from pretrain.data import DataError, validate_coco
from pretrain.files import file_hash
from transfer import coco_det, detectron2_setup
from transfer import detectron2_driver as driver
from transfer.coco_det import CocoDetError, load_config

CONFIGS = coco_det.CONFIG_DIR


def test_moco_protocol_configs_resolve_from_the_model_zoo() -> None:
    fpn = load_config(CONFIGS / "coco_R_50_FPN_1x_moco.yaml")
    c4 = load_config(CONFIGS / "coco_R_50_C4_1x_moco.yaml")
    for cfg in (fpn, c4):
        assert cfg.MODEL.MASK_ON
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.MODEL.BACKBONE.FREEZE_AT == 0
        assert cfg.INPUT.FORMAT == "RGB" and cfg.TEST.PRECISE_BN.ENABLED
        assert cfg.MODEL.PIXEL_MEAN == [123.675, 116.28, 103.53]
        assert cfg.MODEL.PIXEL_STD == [58.395, 57.12, 57.375]
        assert cfg.SOLVER.MAX_ITER == 90000  # the zoo's 1x schedule, inherited
    assert c4.MODEL.RESNETS.NORM == "naiveSyncBN"  # MoCo's (tests/test_detection_configs.py)
    assert fpn.MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone"
    assert fpn.MODEL.FPN.NORM == fpn.MODEL.ROI_BOX_HEAD.NORM == fpn.MODEL.ROI_MASK_HEAD.NORM \
        == "SyncBN"
    assert (fpn.MODEL.ROI_BOX_HEAD.NUM_CONV, fpn.MODEL.ROI_BOX_HEAD.NUM_FC) == (4, 1)
    assert c4.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    cpu = load_config(CONFIGS / "coco_cpu_FPN_128px.yaml")
    assert cpu.MODEL.RESNETS.NORM == "BN" and cpu.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cpu.INPUT.FORMAT == "RGB" and cpu.SOLVER.MAX_ITER < 1000


def test_c4_head_has_mocos_extra_norm_after_res5() -> None:
    from detectron2.layers import NaiveSyncBatchNorm
    from detectron2.modeling import build_model

    cfg = load_config(CONFIGS / "coco_R_50_C4_1x_moco.yaml")
    cfg.MODEL.DEVICE = "cpu"
    res5 = build_model(cfg).roi_heads.res5
    assert isinstance(res5.norm, NaiveSyncBatchNorm) and res5.norm.num_features == 2048
    assert list(dict(res5.named_children()))[-1] == "norm"


def test_unknown_config_key_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('_BASE_: "model_zoo:COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"\n'
                   "MODEL:\n  RESNETS:\n    DEPTHH: 50\n")
    with pytest.raises(CocoDetError, match="DEPTHH"):
        load_config(bad)


def test_c4_with_resnet18_is_refused(tmp_path: Path) -> None:
    settings = coco_det.parse_args(["--weights", "x.pth", "--config-file",
                                    str(CONFIGS / "coco_R_50_C4_1x_moco.yaml"),
                                    "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    with pytest.raises(CocoDetError, match="needs a ResNet-50"):
        driver.setup_cfg(coco_det.Trainer, settings, {"meta": {"arch": "resnet18"},
                                                      "converted": "x.pkl"}, {"num_classes": 10})


def _copy_coco(tiny_data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_data / "coco", tmp_path / "coco"))


def test_validate_coco_accepts_the_synthetic_set(tiny_data: Path) -> None:
    coco = tiny_data / "coco"
    doc = validate_coco(coco / "annotations/instances_val2017.json", coco / "val2017", masks=True)
    assert len(doc["categories"]) == 10


def test_validate_coco_names_missing_fields_and_files(tiny_data: Path, tmp_path: Path) -> None:
    coco = _copy_coco(tiny_data, tmp_path)
    ann = coco / "annotations/instances_val2017.json"
    doc = json.loads(ann.read_text())
    first = doc["images"][0]["file_name"]
    (coco / "val2017" / first).unlink()
    with pytest.raises(DataError, match=f"missing, e.g. {first}"):
        validate_coco(ann, coco / "val2017", masks=True)
    del doc["annotations"][0]["bbox"]
    ann.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"instances_val2017.json: annotations\[0\] lacks"):
        validate_coco(ann, coco / "val2017", masks=True)
    shutil.copy(tiny_data / "coco" / "val2017" / first, coco / "val2017" / first)
    doc["annotations"][0]["bbox"] = [0, 0, 1, 1]
    image_id, doc["annotations"][1]["image_id"] = doc["annotations"][1]["image_id"], 10 ** 9
    ann.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="1 annotation.s. refer to an unknown image"):
        validate_coco(ann, coco / "val2017", masks=True)
    doc["annotations"][1]["image_id"] = image_id
    del doc["annotations"][1]["segmentation"]
    ann.write_text(json.dumps(doc))
    validate_coco(ann, coco / "val2017", masks=False)  # boxes need no polygons
    with pytest.raises(DataError, match=r"annotations\[1\] lacks field\(s\) segmentation"):
        validate_coco(ann, coco / "val2017", masks=True)
    ann.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        validate_coco(ann, coco / "val2017", masks=True)


def test_val_subset_keeps_the_first_images_and_only_their_annotations(tiny_data: Path,
                                                                    tmp_path: Path) -> None:
    full = json.loads((tiny_data / "coco" / "annotations" / "instances_val2017.json").read_text())
    subset = json.loads(coco_det.val_subset(tiny_data / "coco", tmp_path, 3).read_text())
    assert subset["images"] == full["images"][:3]
    kept = {image["id"] for image in subset["images"]}
    assert subset["annotations"] == [a for a in full["annotations"] if a["image_id"] in kept]
    assert subset["annotations"] and subset["categories"] == full["categories"]
    validate_coco(tmp_path / "instances_val2017_first3.json", tiny_data / "coco" / "val2017",
                  masks=True)


def test_driver_refuses_bad_input_before_training(tiny_data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    cifar = tmp_path / "cifar.pth"
    torch.save(build_resnet("resnet18", stem="small").state_dict(), cifar)
    assert coco_det.main(["--weights", str(cifar), "--stem", "small", "--data",
                          str(tiny_data / "coco"), "--out", str(tmp_path / "run")]) == 2
    assert "small-image stem" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last_checkpoint").exists()
    torch.manual_seed(0)
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(zero_init_residual=True).state_dict(), weights)
    assert coco_det.main(["--weights", str(weights), "--data", str(tmp_path / "nowhere"),
                          "--out", str(tmp_path / "run2")]) == 2
    assert "nowhere: data folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()  # nothing converted for a run that cannot start


@pytest.mark.slow
def test_weights_to_ap_end_to_end_with_resume_and_eval_only(tiny_data: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """A torchvision ResNet-18 file -> converted on the fly -> 2 iterations -> COCO AP; then
    --resume to iteration 3 and --eval-only on the result, which must reproduce its AP."""
    torch.manual_seed(0)
    weights = tmp_path / "resnet18_torchvision.pth"
    torch.save(torchvision.models.resnet18(zero_init_residual=True).state_dict(), weights)
    board, out = tmp_path / "board.csv", tmp_path / "run"
    common = ["--data", str(tiny_data / "coco"), "--out", str(out), "--leaderboard", str(board),
              "--config-file", str(CONFIGS / "coco_cpu_FPN_128px.yaml")]
    small = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()"]
    assert coco_det.main(["--weights", str(weights), *common, "SOLVER.MAX_ITER", "2", *small]) == 0
    record = json.loads((out / "backbone.json").read_text())
    assert record["meta"]["arch"] == "resnet18" and (out / "backbone_detectron2.pkl").is_file()
    assert coco_det.main(["--weights", str(weights), *common]) == 2  # the run folder is taken
    assert "--resume" in capsys.readouterr().err

    assert coco_det.main([*common, "--resume", "SOLVER.MAX_ITER", "3", *small]) == 0
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 0" in log
    assert "Starting training from iteration 2" in log  # 0-based: iterations 0, 1 done before
    assert (out / "train_log.json").read_text()  # detectron2's scalars, under their own name
    metrics = json.loads((out / "metrics.json").read_text())
    for task in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics["metrics"][task])
        assert 0.0 <= metrics["metrics"][task]["AP"] <= 100.0
    assert metrics["train_seconds"] > 0 and metrics["eval_seconds"] > 0

    with open(board) as f:
        rows = [r for r in csv.DictReader(f) if r["task"] == "coco_det"]
    assert {r["backbone_id"] for r in rows} == {file_hash(weights)}
    assert {r["protocol"] for r in rows} == {"finetune"} and {r["arch"] for r in rows} == {
        "resnet18"}
    by_metric = {r["metric"]: float(r["value"]) for r in rows}
    assert by_metric["bbox_AP"] == pytest.approx(metrics["metrics"]["bbox"]["AP"], abs=1e-4)
    assert "segm_AP" in by_metric

    (out / "metrics.json").unlink()
    assert coco_det.main([*common, "--eval-only"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["metrics"] == metrics["metrics"]  # the trained model, evaluated again


def test_no_detection_at_all_is_an_error_not_a_silent_empty_result(tmp_path: Path) -> None:
    """pycocotools cannot score a model without detections (detectron2 reports NaN): the run
    must say so and keep metrics.json, not finish without a leaderboard row."""
    from types import SimpleNamespace

    cfg = detectron2_setup.get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    args = SimpleNamespace(leaderboard=tmp_path / "board.csv", data=tmp_path, seed=0,
                           backbone_name=None,
                           val_images=None, opts=(), config_file=coco_det.FULL_CONFIG)
    record = {"source": "w.pth", "backbone_id_from_file": False, "convert_seconds": 0.1,
              "meta": {"method": "simclr", "arch": "resnet18", "backbone_id": "x"}}
    nan = {task: dict.fromkeys(coco_det.METRICS, float("nan")) for task in ("bbox", "segm")}
    with pytest.raises(CocoDetError, match="no detection above .*SCORE_THRESH_TEST=0.05"):
        coco_det.write_outputs(args, cfg, record, nan, 1.0, 1.0)
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["bbox"]["AP"] is None
    assert not (tmp_path / "board.csv").exists()
    nan["bbox"]["AP"] = 0.0  # one defined value is a result
    coco_det.write_outputs(args, cfg, record, nan, 1.0, 1.0)
    assert (tmp_path / "board.csv").is_file()


def test_command_line_extends_detectron2s_parser(tmp_path: Path) -> None:
    """detectron2's own flags (launcher, --config-file, --resume, trailing KEY VALUE overrides)
    come from its default_argument_parser; the settings are one frozen config."""
    from dataclasses import FrozenInstanceError

    from detectron2.engine import default_argument_parser

    ours = coco_det.build_parser()._option_string_actions
    assert set(default_argument_parser()._option_string_actions) <= set(ours)
    settings = coco_det.parse_args(["--weights", "random", "--num-gpus", "2", "--data",
                                    str(tmp_path), "SOLVER.MAX_ITER", "3"])
    assert settings.opts == ("SOLVER.MAX_ITER", "3") and settings.num_gpus == 2
    assert settings.arch == "resnet50" and settings.config_file is None  # by arch and device
    assert settings.dist_url == "auto"
    with pytest.raises(FrozenInstanceError):
        settings.out = tmp_path  # type: ignore[misc]
    with pytest.raises(SystemExit):
        coco_det.parse_args(["--weights", "random", "--data", str(tmp_path), "SOLVER.MAX_ITER"])
