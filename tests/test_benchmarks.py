"""The benchmark scripts end to end on the tiny synthetic sets: both protocols, supervised
references, COCO foreground/background, ImageFolder; metrics JSON, leaderboard rows, errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.probes import coco_fgbg, colorful_mnist, fairface, linear
from benchmarks.probes.config import parse_config, resolve
from benchmarks.probes.probe import main, run_task
from benchmarks.results.leaderboard import read_rows
from pretrain.backbones import build_resnet
from pretrain.checkpoint import save_backbone
from pretrain.data import ColorfulMNIST

ROOT = Path(__file__).resolve().parent.parent
# Small and fast: ResNet-18 with the ImageNet stem at 32 px, short linear probe.
FAST = ["--image-size", "32", "--linear-epochs", "5"]


def common(tmp_path: Path, data: Path, out: str) -> list[str]:
    return ["--data", str(data), "--out", str(tmp_path / out), "--leaderboard",
            str(tmp_path / "board.csv"), "--cache-dir", str(tmp_path / "cache"), *FAST]


def rows(tmp_path: Path, **match: str) -> list[dict[str, str]]:
    return [r for r in read_rows(tmp_path / "board.csv")[1]
            if all(r[k] == v for k, v in match.items())]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "backbone.safetensors"
    save_backbone(path, build_resnet("resnet18", "imagenet").state_dict(),
                  {"method": "simclr", "regularizer": "none", "arch": "resnet18",
                   "stem": "imagenet", "data": "synthetic-colorful_mnist", "epochs": 1})
    return path


def test_colorful_mnist_fixed_and_finetune(tmp_path, tiny_data, checkpoint):
    metrics = run_task(colorful_mnist.TASK, ["--weights", str(checkpoint), "--trials", "2",
                                             "--backbone-name", "tv50",
                                             *common(tmp_path, tiny_data, "fixed")])
    results = metrics["results"]
    assert set(results) == {"linear", "knn5", "knn200"}
    for protocol in results.values():
        assert set(protocol) == {"digit_top1", "background_top1"}
    assert results["linear"]["digit_top1"]["n"] == 2 and results["knn5"]["digit_top1"]["n"] == 1
    assert metrics["gap"]["definition"] == "digit-bkgd"
    assert metrics["gap"]["linear"] == pytest.approx(
        results["linear"]["digit_top1"]["mean"] - results["linear"]["background_top1"]["mean"])
    assert json.loads((tmp_path / "fixed" / "metrics.json").read_text()) == metrics
    board = rows(tmp_path, task="colorful_mnist", method="simclr")
    assert len(board) == 2 * 2 + 2 * 2  # linear x 2 seeds + knn5/knn200 x seed 0, 2 metrics
    assert {r["protocol"] for r in board} == {"linear", "knn5", "knn200"}
    assert all(0 <= float(r["value"]) <= 100 for r in board)
    assert {r["backbone_name"] for r in board} == {"tv50"}   # --backbone-name labels every row

    metrics = run_task(colorful_mnist.TASK, ["--weights", str(checkpoint), "--protocol",
                                             "finetune", "--epochs", "1",
                                             *common(tmp_path, tiny_data, "finetune")])
    assert set(metrics["results"]) == {"finetune"}
    tuned = rows(tmp_path, task="colorful_mnist", protocol="finetune")
    assert len(tuned) == 2 and {r["backbone_name"] for r in tuned} == {""}
    assert (tmp_path / "finetune" / "log.txt").read_text()


def test_fairface_fixed_and_finetune_random_init(tmp_path, tiny_data):
    base = ["--weights", "random", "--stem", "imagenet"]
    fixed = run_task(fairface.TASK, [*base, *common(tmp_path, tiny_data, "fixed")])
    assert set(fixed["results"]["linear"]) == {"age_top1", "gender_top1", "race_top1"}
    assert fixed["backbone"]["backbone_id"] == "random-init-resnet18-imagenet-seed0"
    tuned = run_task(fairface.TASK, [*base, "--protocol", "finetune", "--epochs", "1",
                                     *common(tmp_path, tiny_data, "finetune")])
    assert set(tuned["results"]["finetune"]) == {"age_top1", "gender_top1", "race_top1"}
    assert {r["protocol"] for r in rows(tmp_path, task="fairface")} == {
        "linear", "knn5", "knn200", "finetune"}


def test_supervised_reference(tmp_path, tiny_data):
    metrics = run_task(colorful_mnist.TASK, ["--supervised-on", "digit", "--stem", "imagenet",
                                             "--epochs", "1",
                                             *common(tmp_path, tiny_data, "sup")])
    assert set(metrics["results"]) == {"supervised:digit"}
    assert set(metrics["results"]["supervised:digit"]) == {"digit_top1", "background_top1"}
    saved = Path(metrics["supervised_backbones"][0])
    assert saved.is_file()
    board = rows(tmp_path, protocol="supervised:digit")
    assert len(board) == 2 and board[0]["method"] == "supervised"


def test_coco_fgbg(tmp_path, tiny_data, checkpoint):
    metrics = coco_fgbg.run(["--weights", str(checkpoint),
                             *common(tmp_path, tiny_data / "coco", "coco")])
    assert set(metrics["results"]["linear"]) == {
        f"train_{a}_test_{b}_top1" for a in ("full", "fg") for b in ("full", "fg")}
    assert metrics["gap"]["definition"] == "fg-full"
    assert len(rows(tmp_path, task="coco_fgbg")) == 4


def test_linear_on_imagefolder(tmp_path, tiny_data, checkpoint):
    # An ImageFolder made from the tiny Colorful-MNIST: one folder per background class.
    folder = tmp_path / "folder"
    for split, source in (("train", "train"), ("val", "test")):
        for path, labels in ColorfulMNIST(tiny_data, source).samples:
            target = folder / split / f"bg{labels['background']}" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    for cls in {p.name for p in (folder / "train").iterdir()} - {
            p.name for p in (folder / "val").iterdir()}:
        shutil.copytree(folder / "train" / cls, folder / "val" / cls)
    for cls in {p.name for p in (folder / "val").iterdir()} - {
            p.name for p in (folder / "train").iterdir()}:
        shutil.copytree(folder / "val" / cls, folder / "train" / cls)
    for protocol in ("fixed", "finetune"):
        metrics = run_task(linear.TASK, ["--weights", str(checkpoint), "--protocol", protocol,
                                         "--epochs", "1",
                                         *common(tmp_path, folder, protocol)])
        assert all(set(m) == {"class_top1"} for m in metrics["results"].values())
    assert {r["protocol"] for r in rows(tmp_path, task="imagefolder")} == {
        "linear", "knn5", "knn200", "finetune"}


def test_scripts_run_from_the_command_line(tmp_path, tiny_data, checkpoint):
    for launcher in (["benchmarks/colorful_mnist.py"], ["-m", "benchmarks.colorful_mnist"]):
        done = subprocess.run([sys.executable, *launcher, "--weights", str(checkpoint),
                               *common(tmp_path, tiny_data, "cli")],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (tmp_path / "cli" / "metrics.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--weights", "absent.safetensors"], "absent.safetensors: no such checkpoint file"),
    (["--weights", "random", "--supervised-on", "colour"], "unknown attribute"),
    (["--supervised-on", "digit", "--protocol", "finetune"], "exclude each other"),
    ([], "--weights is required"),
])
def test_bad_input_is_a_clear_error(tmp_path, tiny_data, capsys, argv, message):
    code = main(lambda a: run_task(colorful_mnist.TASK, a),
                [*argv, *common(tmp_path, tiny_data, "bad")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "board.csv").exists()


def test_an_empty_backbone_name_is_refused_when_parsed(tmp_path, tiny_data, capsys):
    with pytest.raises(SystemExit) as info:
        main(lambda a: run_task(colorful_mnist.TASK, a),
             ["--weights", "random", "--backbone-name", " ", *common(tmp_path, tiny_data, "bad")])
    assert info.value.code == 2
    assert "argument --backbone-name: is empty" in capsys.readouterr().err
    assert not (tmp_path / "board.csv").exists()


def test_imagefolder_needs_data(tmp_path, capsys):
    code = main(lambda a: run_task(linear.TASK, a), ["--weights", "random"])
    assert code == 2 and "--data is required" in capsys.readouterr().err


def test_settings_are_one_frozen_config_resolved_once(tmp_path, tiny_data):
    from dataclasses import FrozenInstanceError


    parsed = parse_config(colorful_mnist.TASK, ["--weights", "random", "--data",
                                                str(tiny_data / "colorful_mnist")])
    task, resolved = resolve(colorful_mnist.TASK, parsed)
    assert (parsed.image_size, parsed.stem, parsed.workers, parsed.epochs) == (None,) * 4
    assert (resolved.image_size, resolved.stem, resolved.workers) == (64, "small", 0)
    assert resolved.epochs == 0.25 and task.classes == {"digit": 10, "background": 10}
    with pytest.raises(FrozenInstanceError):
        resolved.data = tmp_path  # type: ignore[misc]
    metrics = run_task(colorful_mnist.TASK, ["--weights", "random",
                                             *common(tmp_path, tiny_data, "run")])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["image_size"] == 32 and saved["stem"] == "small"  # what the run used
    assert saved["protocol"] == "fixed" and saved["task"] == "colorful_mnist"
    assert {k: v for k, v in saved.items() if k != "task"} == {**metrics["config"],
                                                               "protocol": "fixed"}
