"""Hostile run folders, flags and environments of pretraining (issues 27 and 30): each refused on
one line naming the file, flag or variable, exit 2, with nothing in the run folder rewritten."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import torch
from test_hostile import _assert_untouched, _checksums, _one_error_line
from test_pretrain import _cli_flags, tiny_config

from benchmarks.probes import colorful_mnist
from benchmarks.probes import config as probe_config
from pretrain import cli, data_home
from pretrain import train as train_module
from pretrain.checkpoint import load_torch, save_state
from pretrain.distributed import launcher_ranks, max_processes
from transfer import mpii_pose

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def finished_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretraining run of 2 steps, finished (tests copy what they tamper with)."""
    out = tmp_path_factory.mktemp("runs")
    return train_module.train(tiny_config(tiny_data, out, "simclr", steps=2))


def _copy_run(run: Path, tmp_path: Path, names: tuple[str, ...] | None = None) -> Path:
    """A copy of the run folder (only ``names`` of it, when given)."""
    copy = tmp_path / run.name
    copy.mkdir()
    for path in run.rglob("*"):
        if path.is_file() and (names is None or path.name in names):
            target = copy / path.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return copy


def test_resume_of_a_finished_run_keeps_its_record(
        finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _copy_run(finished_run, tmp_path)
    before = _checksums(tmp_path)
    for steps in (["--steps", "1"], ["--steps", "2"], []):  # shorter, as long, the saved length
        assert train_module.main(["--resume", str(run), *steps]) == 2, steps
        _one_error_line(capsys.readouterr().err, "last_state.pt", "already reached step 2")
        _assert_untouched(tmp_path, before)  # config.yaml and metrics.json (wall time) kept


@pytest.mark.parametrize("tamper", ["not a dict", "no history", "step as text", "other model",
                                    "optimizer of another run"])
def test_resume_refuses_a_tampered_state_in_one_line(
        finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, tamper: str) -> None:
    run = _copy_run(finished_run, tmp_path, names=("config.yaml", ".written_by.json"))
    state = load_torch(finished_run / "last_state.pt")
    state = {
        "not a dict": [1, 2, 3],
        "no history": {k: v for k, v in state.items() if k != "history"},
        "step as text": {**state, "step": "1"},
        "other model": {**state, "step": 1, "method": {"projector.0.weight": torch.zeros(3)}},
        "optimizer of another run": {**state, "step": 1, "optimizer": {"state": {}}},
    }[tamper]
    save_state(run / "last_state.pt", state)
    before = _checksums(tmp_path)
    assert train_module.main(["--resume", str(run), "--steps", "3"]) == 2
    _one_error_line(capsys.readouterr().err, str(run / "last_state.pt"))
    _assert_untouched(tmp_path, before, outputs=(f"{run.name}/log.txt",))


@pytest.mark.parametrize("flag", [["--method-arg", "temprature=0.2"],
                                  ["--method-arg", "proj_dim=-3"],
                                  ["--regularizer", "rcl", "--regularizer-arg", "lamda=1"],
                                  ["--regularizer", "nope"]])
def test_bad_method_and_regularizer_options_leave_no_run_folder(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flag: list[str]) -> None:
    cfg = tiny_config(tiny_data, tmp_path / "runs", "simclr")
    assert train_module.main([*_cli_flags(cfg), "--steps", "1", *flag]) == 2
    _one_error_line(capsys.readouterr().err, flag[-1].split("=")[0])
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("env", [{"LOCAL_RANK": "0"}, {"WORLD_SIZE": "2", "RANK": "0"},
                                 {"RANK": "3", "LOCAL_RANK": "0", "WORLD_SIZE": "2",
                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
                                 {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "two",
                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}])
def test_launcher_variables_outside_torchrun_are_refused(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = tiny_config(tiny_data, tmp_path / "runs", "simclr")
    assert train_module.main([*_cli_flags(cfg), "--steps", "1"]) == 2
    _one_error_line(capsys.readouterr().err, *env)
    assert not (tmp_path / "runs").exists()


def test_launcher_variables_of_torchrun_are_read() -> None:
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "h",
           "MASTER_PORT": "29500"}
    assert launcher_ranks(env) == (3, 1, 4)
    assert launcher_ranks({}) is None


@pytest.mark.parametrize("value", ["file", ""])
def test_data_dir_variable_naming_a_file_is_refused(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    if value:
        (tmp_path / value).write_text("not a folder")
        value = str(tmp_path / value)
    monkeypatch.setenv(data_home.DATA_DIR_VARIABLE, value)
    cfg = dataclasses.replace(tiny_config(tiny_data, tmp_path / "runs", "simclr"), data_root=None)
    flags = [f for f in _cli_flags(cfg) if not f.startswith("colorful_mnist=")]
    flags[flags.index("--data")] = "--data=colorful_mnist"
    assert train_module.main([*flags, "--steps", "1"]) == 2
    _one_error_line(capsys.readouterr().err, data_home.DATA_DIR_VARIABLE)


def test_sizes_and_process_counts_have_an_upper_bound(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tiny_config(tiny_data, tmp_path / "runs", "simclr")
    assert train_module.main([*_cli_flags(cfg), "--steps", "1", "--image-size", "100000"]) == 2
    _one_error_line(capsys.readouterr().err, "--image-size", str(cli.MAX_IMAGE_SIZE))
    assert not (tmp_path / "runs").exists()
    with pytest.raises(argparse.ArgumentTypeError, match=f"at most {cli.MAX_IMAGE_SIZE}"):
        cli.IMAGE_SIZE("100000")
    assert cli.IMAGE_SIZE(str(cli.MAX_IMAGE_SIZE)) == cli.MAX_IMAGE_SIZE
    with pytest.raises(SystemExit):
        probe_config.parse_config(colorful_mnist.TASK,
                                  ["--weights", "random", "--image-size", "100000"])
    _one_error_line(capsys.readouterr().err, "--image-size", f"at most {cli.MAX_IMAGE_SIZE}")
    too_many = str(max_processes() + 1)
    with pytest.raises(SystemExit):
        mpii_pose.parse_args(["--weights", "random", "--gpus", too_many])
    _one_error_line(capsys.readouterr().err, "--gpus", f"at most {max_processes()}")
