"""Untrusted files: a checkpoint or config downloaded from a stranger is read without running code
from it, at every entry point that takes one. The planted pickle would create a file if unpickled;
each command must refuse it with a clear error (exit 2) and the file must not exist afterwards."""
from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_checkpoint import _PlantsAFile

import transfer.compat  # noqa: F401,I001  (before detectron2 and mmpose)
from benchmarks.probes import colorful_mnist
from benchmarks.probes.probe import main as probe_main
from benchmarks.probes.probe import run_task
from pretrain import train
from pretrain.checkpoint import CheckpointError
from transfer import coco_det, convert, mpii_pose
from transfer.mpii_checkpoint import load_runner_checkpoint
from transfer.mpii_config import CPU_CONFIG

pytestmark = pytest.mark.reliability


def _plant(path: Path, planted: Path, as_torch: bool) -> Path:
    payload = {"state_dict": {"conv1.weight": _PlantsAFile(str(planted))}}
    if as_torch:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path


def _coco(weights: Path, tmp: Path, data: Path) -> int:
    return coco_det.main(["--weights", str(weights), "--data", str(data / "coco"),
                          "--out", str(tmp / "run"), "--leaderboard", str(tmp / "b.csv")])


def _mpii(weights: Path, tmp: Path, data: Path) -> int:
    return mpii_pose.main(["--weights", str(weights), "--data", str(data / "mpii"),
                           "--out", str(tmp / "run"), "--leaderboard", str(tmp / "b.csv")])


def _probe(weights: Path, tmp: Path, data: Path) -> int:
    return probe_main(lambda argv: run_task(colorful_mnist.TASK, argv),
                      ["--weights", str(weights), "--data", str(data / "colorful_mnist"),
                       "--out", str(tmp / "run"), "--leaderboard", str(tmp / "b.csv")])


def _convert(weights: Path, tmp: Path, data: Path) -> int:
    return convert.main([str(weights), "--to", "detectron2", "--out", str(tmp / "out.pkl")])


def _resume(weights: Path, tmp: Path, data: Path) -> int:
    """A pretraining run folder whose last_state.pt was replaced by the planted file."""
    run_dir = tmp / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"data: colorful_mnist\ndata_root: {data}/colorful_mnist"
                                         "\nsteps: 2\nbatch_size: 4\nimage_size: 8\n")
    (run_dir / "last_state.pt").write_bytes(weights.read_bytes())
    return train.main(["--resume", str(run_dir)])


ENTRY_POINTS: dict[str, Callable[[Path, Path, Path], int]] = {
    "coco_det --weights": _coco, "mpii_pose --weights": _mpii,
    "colorful_mnist --weights": _probe, "convert": _convert, "pretrain --resume": _resume}


@pytest.mark.parametrize("as_torch", [True, False], ids=["torch.save", "pickle"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_planted_pickle_is_refused_everywhere(entry: str, as_torch: bool, tiny_data: Path,
                                              tmp_path: Path, capsys: pytest.CaptureFixture
                                              ) -> None:
    planted = tmp_path / "planted"
    weights = _plant(tmp_path / ("evil.pth" if as_torch else "evil.pkl"), planted, as_torch)
    assert ENTRY_POINTS[entry](weights, tmp_path, tiny_data) == 2
    err = capsys.readouterr().err
    assert "evil" in err or "last_state.pt" in err, err
    assert "Traceback" not in err
    assert not planted.exists(), f"{entry} ran code from the file"


def test_mmengine_yaml_config_with_python_tags_is_not_executed(tiny_data: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture
                                                              ) -> None:
    """--config takes any path; a YAML config (data, unlike a .py config, which is a program the
    user chose to run) that would build Python objects is refused in one line."""
    planted = tmp_path / "planted"
    config = tmp_path / "downloaded_config.yaml"
    config.write_text(f"_base_: [{str(CPU_CONFIG)!r}]\n"
                      f"x: !!python/object/apply:pathlib.Path.touch [{str(planted)!r}]\n")
    code = mpii_pose.main(["--weights", "random", "--data", str(tiny_data / "mpii"),
                           "--config", str(config), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"--config {config}" in err and "Python tags are refused" in err
    assert not planted.exists()


def test_detectron2_yaml_with_python_tags_is_not_executed(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    config = tmp_path / "downloaded.yaml"
    config.write_text(f"MODEL: !!python/object/apply:pathlib.Path.touch [{str(planted)!r}]\n")
    with pytest.raises(coco_det.CocoDetError, match="cannot be read as YAML"):
        coco_det.load_config(config)
    assert not planted.exists()


def test_runner_checkpoint_reader_admits_its_allow_list_only(tmp_path: Path) -> None:
    """mmengine Runner checkpoints (MPII --resume, --eval-only) are read by torch's weights_only
    reader widened by mmengine's log types only: a planted object is still refused, in the zip
    format and in torch's legacy one."""
    planted = tmp_path / "planted"
    evil = _plant(tmp_path / "iter_1.pth", planted, as_torch=True)
    with pytest.raises(CheckpointError, match="refused to load: it holds .pathlib.Path"):
        load_runner_checkpoint(evil)
    legacy = tmp_path / "iter_2.pth"
    torch.save({"x": _PlantsAFile(str(planted))}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_runner_checkpoint(legacy)
    assert not planted.exists()
