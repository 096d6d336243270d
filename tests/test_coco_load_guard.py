"""transfer/coco_det.py's guards: after detectron2 builds and loads Mask R-CNN, every converted
tensor is in the model as written (C4's res5 under roi_heads.res5 included); the conversion is
verified with the run's own resolved config; a GPU recipe is refused on a CPU."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pretrain.open_backbone import open_backbone
from transfer import coco_det
from transfer import detectron2_driver as driver
from transfer.coco_det import CocoDetError


def _settings(tmp_path: Path, config: Path, *opts: str) -> coco_det.CocoDetConfig:
    return coco_det.parse_args(["--weights", "random", "--config-file", str(config),
                                "--data", str(tmp_path), "--out", str(tmp_path / "run"), *opts])


def _converted_c4(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A random ResNet-50 converted and verified with the C4 run's config, loaded by detectron2
    into the Mask R-CNN R50-C4 that config builds."""
    from detectron2.checkpoint import DetectionCheckpointer

    settings = _settings(tmp_path, coco_det.C4_CONFIG)
    backbone = open_backbone("random", "resnet50", "imagenet", 0)
    (tmp_path / "run").mkdir()
    record = {"meta": backbone.meta, "converted": str(tmp_path / "run" / driver.BACKBONE_FILE)}
    cfg = driver.setup_cfg(coco_det.Trainer, settings, record, {"num_classes": 2})
    driver.prepare_backbone(settings, backbone, cfg)
    model = coco_det.Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model, Path(cfg.MODEL.WEIGHTS)


def test_c4_model_holds_every_converted_tensor_and_the_guard_names_a_wrong_one(
        tmp_path: Path) -> None:
    from detectron2.checkpoint import DetectionCheckpointer

    model, pkl = _converted_c4(tmp_path)
    data = DetectionCheckpointer(model)._load_file(str(pkl))["model"]
    assert driver.check_loaded(model, pkl) == len(data) == 265  # BN statistics included
    # res5 sits in the ROI head, placed there by detectron2's matching heuristics
    assert torch.equal(model.roi_heads.res5[2].conv3.weight,
                       torch.as_tensor(data["res5.2.conv3.weight"]))
    with torch.no_grad():
        model.roi_heads.res5[0].conv1.weight[0, 0] += 1.0
        model.backbone.stem.conv1.norm.running_mean[3] = 7.0
    with pytest.raises(CocoDetError, match="2 of its 265 tensors") as err:
        driver.check_loaded(model, pkl)
    assert "roi_heads.res5.0.conv1.weight" in str(err.value)
    assert "backbone.stem.conv1.norm.running_mean" in str(err.value)


def test_a_file_the_model_cannot_place_is_refused(tmp_path: Path) -> None:
    """Tensors under names the rule does not place (here an FPN file's res5 in a model without
    it) are named, not skipped."""
    from detectron2.checkpoint import DetectionCheckpointer

    model, pkl = _converted_c4(tmp_path)
    del model.roi_heads.res5  # a model without res5: its res5 tensors have no place
    model.roi_heads.add_module("res5", torch.nn.Identity())
    DetectionCheckpointer(model).load(str(pkl))
    res5 = sum(name.startswith("res5.") for name in
               DetectionCheckpointer(model)._load_file(str(pkl))["model"])
    with pytest.raises(CocoDetError, match=f"{res5} of its 265") as err:
        driver.check_loaded(model, pkl)
    assert "res5.0.conv1.weight" in str(err.value)


def test_conversion_is_verified_with_the_runs_overrides(tiny_data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """Weights trained with the stride in the 3x3 conv, a run that overrides STRIDE_IN_1X1 True:
    verified in the ResNet the run builds, the features differ and nothing starts."""
    import logging

    import torchvision
    from detectron2.utils.logger import setup_logger

    # an earlier in-process detectron2 run leaves cached handlers on a closed captured stream
    setup_logger.cache_clear()
    for name in ("detectron2", "fvcore", "d2"):
        logging.getLogger(name).handlers.clear()

    out, weights = tmp_path / "run", tmp_path / "r50.pth"
    torch.manual_seed(0)  # no zero-init residuals: they would hide where the stride sits
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    assert coco_det.main(["--weights", str(weights), "--data", str(tiny_data / "coco"),
                          "--config-file", str(coco_det.CPU_CONFIG), "--out", str(out),
                          "--val-images", "1", "SOLVER.MAX_ITER", "1",
                          "MODEL.RESNETS.STRIDE_IN_1X1", "True"]) == 2
    err = capsys.readouterr().err
    assert "features differ" in err and "STRIDE_IN_1X1 True" in err and "3x3 conv" in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / driver.BACKBONE_FILE).exists() and not (out / "last_checkpoint").exists()


def test_gpu_recipe_on_a_cpu_is_refused_naming_the_cpu_one(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("the guard is for machines without a GPU")
    out = tmp_path / "run"
    # without the guard the run would convert and start training: fail at once, not after GBs
    monkeypatch.setattr(driver, "prepare_backbone", lambda *a: pytest.fail("it converted"))
    monkeypatch.setattr(driver, "launch_any", lambda *a, **k: pytest.fail("it started"))
    for config in (coco_det.C4_CONFIG, coco_det.FPN_CONFIG):
        assert coco_det.main(["--weights", "random", "--data", str(tiny_data / "coco"),
                              "--config-file", str(config), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--config-file {config.name} is a GPU recipe (16 images" in err
        assert "--config-file transfer/configs/coco_cpu_FPN_128px.yaml" in err
        assert len(err.strip().splitlines()) == 1 and not out.exists()
    settings = _settings(tmp_path, coco_det.FPN_CONFIG, "MODEL.DEVICE", "cpu")
    cfg = driver.setup_cfg(coco_det.Trainer, settings, {"meta": {"arch": "resnet18"},
                                                        "converted": "x"}, {"num_classes": 2})
    driver.check_cpu_recipe(coco_det.Trainer, cfg, settings)  # MODEL.DEVICE cpu opts in
    small = _settings(tmp_path, coco_det.FPN_CONFIG, "SOLVER.IMS_PER_BATCH", "2",
                      "INPUT.MAX_SIZE_TRAIN", "512")
    driver.check_cpu_recipe(coco_det.Trainer, driver.setup_cfg(
        coco_det.Trainer, small, {"meta": {"arch": "resnet18"}, "converted": "x"},
        {"num_classes": 2}), small)


def test_default_recipe_is_c4_for_a_resnet50_on_real_data_with_a_gpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert coco_det.Trainer.default_config("resnet50", real_data=True) == coco_det.C4_CONFIG
    assert coco_det.Trainer.default_config("resnet18", real_data=True) == coco_det.FPN_CONFIG
    assert coco_det.Trainer.default_config("resnet50", real_data=False) == coco_det.CPU_CONFIG
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert coco_det.Trainer.default_config("resnet50", real_data=True) == coco_det.CPU_CONFIG


def test_a_run_whose_model_loaded_nothing_stops_before_training(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker checks after detectron2's resume_or_load: a load that placed nothing (here
    skipped) stops the run, naming the tensors, before its first iteration."""
    settings = coco_det.parse_args(["--weights", "random", "--arch", "resnet18", "--data",
                                    str(tiny_data / "coco"), "--config-file",
                                    str(coco_det.CPU_CONFIG), "--out", str(tmp_path / "run"),
                                    "SOLVER.IMS_PER_BATCH", "2"])
    backbone = open_backbone("random", "resnet18", "imagenet", 0)
    (tmp_path / "run").mkdir()
    record = {"meta": backbone.meta, "converted": str(tmp_path / "run" / driver.BACKBONE_FILE)}
    info = {"num_classes": 10, "val_json": None}
    record = driver.prepare_backbone(settings, backbone,
                                     driver.setup_cfg(coco_det.Trainer, settings, record, info))
    monkeypatch.setattr(coco_det.Trainer, "resume_or_load", lambda self, resume: None)
    monkeypatch.setattr(coco_det.Trainer, "train", lambda self: pytest.fail("it trained"))
    with pytest.raises(CocoDetError, match="backbone_detectron2.pkl: after detectron2 built and "
                       "loaded the model, [0-9]+ of its [0-9]+ tensors") as err:
        driver.worker(coco_det.Trainer, settings, record, info)
    assert "backbone.bottom_up.stem.conv1.weight" in str(err.value)
