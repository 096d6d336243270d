"""MPII pose transfer: conversion into mmpose's ResNet, both protocols end to end on the tiny
synthetic set (mmpose trains and scores for real), and bad input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_checkpoint import _PlantsAFile

import transfer.compat  # noqa: F401,I001  (before mmpose)
from benchmarks.results.leaderboard import read_rows
from pretrain.backbones import build_resnet, stage_outputs
from pretrain.open_backbone import Backbone, open_backbone
from transfer import mpii_pose
from transfer.convert import export_backbone
from transfer.mpii_checkpoint import load_runner_checkpoint
from transfer.mpii_config import CPU_CONFIG, FULL_CONFIG, MpiiPoseError, build_config, read_config
from transfer.mpii_guard import BackboneGuard
from transfer.mpii_run import run

REPO = Path(__file__).resolve().parent.parent
GROUPS = ("head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")


def _torchvision_file(path: Path, prefix: str = "", stem: str = "imagenet") -> Path:
    """A torchvision ResNet-18 checkpoint as other code bases save it (fc dropped)."""
    torch.manual_seed(1)
    model = build_resnet("resnet18", stem)
    torch.save({"state_dict": {prefix + k: v for k, v in model.state_dict().items()}}, path)
    return path


def _runner_backbone(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Backbone tensors of a Runner checkpoint, read with the driver's restricted loader."""
    state = load_runner_checkpoint(checkpoint)
    return {k.removeprefix("backbone."): v for k, v in state["state_dict"].items()
            if k.startswith("backbone.")}


def _args(data: Path, out: Path, weights: str, *extra: str) -> list[str]:
    return ["--weights", weights, "--data", str(data), "--out", str(out),
            "--config", str(CPU_CONFIG), "--leaderboard", str(out / "board.csv"),
            "--max-iters", "2", "--batch-size", "4", *extra]


def test_converted_checkpoint_gives_mmpose_resnet_the_source_features(tmp_path):
    from mmpose.models.backbones import ResNet

    src = _torchvision_file(tmp_path / "r18.pth")
    out = export_backbone(open_backbone(src), "mmpose", tmp_path / "r18_mmpose.pth")
    backbone = ResNet(depth=18, out_indices=(0, 1, 2, 3),
                      init_cfg=dict(type="Pretrained", checkpoint=str(out)))
    backbone.init_weights()
    backbone.eval()
    source = build_resnet("resnet18")
    source.load_state_dict(torch.load(src, weights_only=True)["state_dict"])
    source.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = list(stage_outputs(source, x).values())
        features = backbone(x)
    assert len(features) == len(expected) == 4  # out_indices (0, 1, 2, 3): every stage compared
    for got, want in zip(features, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.slow
def test_fixed_protocol_end_to_end_keeps_backbone(tiny_data, tmp_path):
    out = tmp_path / "fixed"
    weights = _torchvision_file(tmp_path / "r18.pth", prefix="module.encoder_q.")  # MoCo-style
    result = subprocess.run(  # the script entry point, as a user runs it
        [sys.executable, "-m", "transfer.mpii_pose",
         *_args(tiny_data / "mpii", out, str(weights), "--protocol", "fixed")],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]

    record = json.loads((out / "metrics.json").read_text())
    assert record["iterations"] == 2 and record["arch"] == "resnet18"
    raw = record["mmpose_metrics"]  # MpiiPCKAccuracy's own keys
    assert record["metrics"]["PCKh@0.5"] == raw["PCK"]
    assert record["metrics"]["PCKh@0.1"] == raw["PCK@0.1"]
    assert record["metrics"]["PCKh@0.5_wrist"] == raw["Wrist PCK"]
    assert all(0 <= v <= 100 for v in raw.values())
    assert (out / "mpii_cpu_128x128.py").is_file()  # the resolved config, dumped by the Runner
    assert list(out.glob("*/*.log"))  # mmengine's log

    rows = read_rows(out / "board.csv")[1]
    assert {r["metric"] for r in rows} == {"PCKh@0.5", "PCKh@0.1",
                                           *(f"PCKh@0.5_{g}" for g in GROUPS)}
    assert {(r["task"], r["protocol"], r["arch"]) for r in rows} == {
        ("mpii_pose", "fixed", "resnet18")}

    # Every backbone tensor, BN running statistics included, is the source's after training.
    converted = torch.load(out / "backbone_mmpose.pth", weights_only=True)["state_dict"]
    trained = _runner_backbone(out / "iter_2.pth")
    assert trained.keys() == converted.keys()
    for key, value in converted.items():
        assert torch.equal(trained[key], value), key


@pytest.mark.slow
def test_finetune_protocol_random_init_trains_backbone_and_resumes(tiny_data, tmp_path, capsys):
    out = tmp_path / "finetune"
    args = _args(tiny_data / "mpii", out, "random", "--protocol", "finetune", "--seed", "3")
    record = run(mpii_pose.parse_args(args))
    assert record["backbone"]["backbone_id"] == "random-init-resnet18-imagenet-seed3"
    assert set(record["metrics"]) == {"PCKh@0.5", "PCKh@0.1", *(f"PCKh@0.5_{g}" for g in GROUPS)}
    rows = read_rows(out / "board.csv")[1]
    assert {r["protocol"] for r in rows} == {"finetune"} and len(rows) == 9

    start = torch.load(out / "backbone_mmpose.pth", weights_only=True)["state_dict"]
    trained = _runner_backbone(out / "iter_2.pth")
    assert any(not torch.equal(trained[k], v) for k, v in start.items())

    # --resume continues from iter_2.pth (numpy objects and log buffers: read through the
    # allow-list, which admits them and nothing else).
    resumed = run(mpii_pose.parse_args([*args, "--max-iters", "3", "--resume"]))
    assert resumed["iterations"] == 3 and (out / "iter_3.pth").is_file()
    assert resumed["best"]["iteration"] == 3

    # A code-carrying pickle planted as the run folder's last checkpoint is refused in one line
    # and runs nothing.
    planted = tmp_path / "planted"
    torch.save({"state_dict": {"head.x": _PlantsAFile(str(planted))}}, out / "iter_3.pth")
    capsys.readouterr()
    assert mpii_pose.main([*args, "--max-iters", "4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "iter_3.pth: refused to load" in err, err
    assert "which could run code" in err and not planted.exists()


def test_config_follows_arch_protocol_and_batch(monkeypatch, tmp_path):
    common = dict(data_root=tmp_path, backbone_file=tmp_path / "b.pth", out_dir=tmp_path,
                  n_train=2000)
    cfg = build_config(read_config(CPU_CONFIG), arch="resnet50", protocol="fixed",
                                 **common)
    assert cfg.model.backbone.depth == 50 and cfg.model.head.in_channels == 2048
    assert cfg.model.backbone.frozen_stages == 4 and cfg.model.backbone.norm_eval
    assert cfg.model.backbone.init_cfg.checkpoint == str(tmp_path / "b.pth")
    assert cfg.train_dataloader.sampler.type == "InfiniteSampler"
    assert cfg.train_cfg == dict(type="IterBasedTrainLoop", max_iters=189, val_interval=189)
    warmup, steps = cfg.param_scheduler
    assert warmup.end == 18 and steps.milestones == [126] and not steps.by_epoch
    assert cfg.auto_scale_lr == dict(base_batch_size=512, enable=True)

    cfg = build_config(read_config(FULL_CONFIG), arch="resnet34", protocol="finetune",
                                 max_iters=10, **common)
    assert cfg.model.backbone.depth == 34 and cfg.model.head.in_channels == 512
    assert "frozen_stages" not in cfg.model.backbone
    assert cfg.model.head.decoder.input_size == (256, 256)
    assert "torchvision://" not in cfg.pretty_text
    assert cfg.train_cfg.max_iters == 10 and cfg.param_scheduler[1].milestones == [8, 10]

    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun: iterations follow the total batch
    args = mpii_pose.parse_args(["--weights", "random", "--launcher", "pytorch"])
    cfg = build_config(read_config(CPU_CONFIG), arch="resnet18", protocol="fixed",
                                 launcher=args.launcher, **common)
    assert cfg.launcher == "pytorch" and cfg.train_cfg.max_iters == 3 * 32


def test_config_from_any_folder_with_cfg_options(tmp_path):
    """--config reads a config outside the repository (its _base_ beside it), and
    --cfg-options KEY=VALUE changes it as mmengine's DictAction parses them; the driver's own
    settings still win over both."""
    for config in (CPU_CONFIG, FULL_CONFIG):
        shutil.copy(config, tmp_path / config.name)
    args = mpii_pose.parse_args([
        "--weights", "random", "--config", str(tmp_path / CPU_CONFIG.name), "--cfg-options",
        "optim_wrapper.optimizer.lr=0.01", "train_dataloader.num_workers=3",
        "model.backbone.depth=101"])
    assert args.cfg_options == {"optim_wrapper.optimizer.lr": 0.01,
                                "train_dataloader.num_workers": 3, "model.backbone.depth": 101}
    cfg = build_config(read_config(args.config, args.cfg_options), data_root=tmp_path,
                       backbone_file=tmp_path / "b.pth", arch="resnet18", protocol="fixed",
                       out_dir=tmp_path / "run", n_train=16)
    assert cfg.optim_wrapper.optimizer.lr == 0.01 and cfg.train_dataloader.num_workers == 3
    assert cfg.model.backbone.depth == 18  # the backbone is the driver's


def test_val_images_evaluates_the_first_people_only(tiny_data, tmp_path):
    from mmengine.registry import init_default_scope
    from mmpose.registry import DATASETS

    init_default_scope("mmpose")
    cfg = build_config(read_config(CPU_CONFIG), data_root=tiny_data / "mpii",
                                 backbone_file=tmp_path / "b.pth", arch="resnet18",
                                 protocol="fixed", out_dir=tmp_path, n_train=16, val_images=3)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    full = json.loads((tiny_data / "mpii" / "annotations" / "mpii_val.json").read_text())
    assert len(val) == 3 < len(full)
    assert [val.get_data_info(i)["img_path"].endswith(full[i]["image"]) for i in range(3)] == [
        True] * 3


# ----------------------------------------------------------------------------- bad input
@pytest.fixture
def mpii_copy(tiny_data, tmp_path) -> Path:
    root = tmp_path / "mpii"
    shutil.copytree(tiny_data / "mpii", root)
    return root


def _fails(capsys, argv: list[str], *expected: str) -> None:
    assert mpii_pose.main(argv) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err


def test_missing_headbox_file_is_a_clear_error(mpii_copy, tmp_path, capsys):
    (mpii_copy / "annotations" / "mpii_gt_val.mat").unlink()
    _fails(capsys, _args(mpii_copy, tmp_path / "run", "random"),
           "mpii_gt_val.mat: missing head-box file")


def test_annotation_without_joints_is_a_clear_error(mpii_copy, tmp_path, capsys):
    path = mpii_copy / "annotations" / "mpii_val.json"
    anns = json.loads(path.read_text())
    del anns[3]["joints"]
    path.write_text(json.dumps(anns))
    _fails(capsys, _args(mpii_copy, tmp_path / "run", "random"),
           "mpii_val.json: entry 3 lacks field(s) joints")


def test_headbox_count_must_match_val_annotations(mpii_copy, tmp_path, capsys):
    path = mpii_copy / "annotations" / "mpii_val.json"
    path.write_text(json.dumps(json.loads(path.read_text())[:-1]))
    _fails(capsys, _args(mpii_copy, tmp_path / "run", "random"), "'headboxes_src' must have shape")


def test_bad_checkpoints_are_clear_errors(tiny_data, tmp_path, capsys):
    prefixed = _torchvision_file(tmp_path / "prefixed.pth", prefix="backbone.")
    _fails(capsys, _args(tiny_data / "mpii", tmp_path / "a", str(prefixed), "--prefix", "head."),
           "prefixed.pth")
    small = _torchvision_file(tmp_path / "small.pth", stem="small")
    _fails(capsys, _args(tiny_data / "mpii", tmp_path / "b", str(small), "--stem", "small"),
           "small-image stem")
    _fails(capsys, _args(tiny_data / "mpii", tmp_path / "c", str(tmp_path / "absent.pth")),
           "absent.pth")


def test_mis_prefixed_mmpose_file_stops_before_training(tiny_data, tmp_path):
    """mmpose loads nothing from a ``backbone.``-prefixed file and only warns; the driver stops."""
    from mmengine.runner import Runner

    model = build_resnet("resnet18")
    bad = tmp_path / "prefixed_mmpose.pth"
    torch.save({"state_dict": {"backbone." + k: v for k, v in model.state_dict().items()}}, bad)
    cfg = build_config(read_config(CPU_CONFIG), data_root=tiny_data / "mpii",
                                 backbone_file=bad, arch="resnet18", protocol="fixed",
                                 out_dir=tmp_path / "run", n_train=16, max_iters=1)
    runner = Runner.from_cfg(cfg)
    source = Backbone(model, {"arch": "resnet18", "stem": "imagenet"}, None, "in memory")
    runner.register_hook(BackboneGuard(source, bad, frozen=True),
                         "VERY_HIGH")
    with pytest.raises(MpiiPoseError, match="backbone was not loaded"):
        runner.train()
    assert not list((tmp_path / "run").glob("iter_*.pth"))


def test_resume_without_checkpoint_is_a_clear_error(tiny_data, tmp_path, capsys):
    _fails(capsys, _args(tiny_data / "mpii", tmp_path / "run", "random", "--resume"),
           "no checkpoint to resume from")
