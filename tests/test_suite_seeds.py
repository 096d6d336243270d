"""The suite's --seeds N: each backbone pretrained with seeds 0..N-1, every stage of a backbone run
with its seed (probe seed and random init of a probe script, --seed of an engine)."""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.runner import suite
from benchmarks.runner.tasks import data_sets, suite_stages
from pretrain.synthetic import GENERATORS


def _args(tmp_path: Path, seeds: int) -> argparse.Namespace:
    data = {key: str(tmp_path / key) for key in GENERATORS}
    return argparse.Namespace(panel=["simclr", "simclr+rcl"], arch="resnet18", budget="smoke",
                              pretrain_steps=None, checkpoint=[], data=data, synthetic=set(data),
                              gpus=1, tasks=list(suite_stages()), seeds=seeds)


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_each_seed_is_its_own_backbone_with_its_seed_in_every_stage(tmp_path: Path) -> None:
    stages = suite.plan(_args(tmp_path, 3), tmp_path / "out")
    pretrain = {s.backbone: s for s in stages if s.name == "pretrain"}
    assert set(pretrain) == {"simclr", "simclr.seed1", "simclr.seed2", "simclr+rcl",
                             "simclr+rcl.seed1", "simclr+rcl.seed2"}
    assert [_flag(pretrain[f"simclr{s}"].argv, "--seed") for s in ("", ".seed1", ".seed2")] \
        == ["0", "1", "2"]
    assert len({s.outputs[0] for s in pretrain.values()}) == 6  # one weights file each
    for stage in stages:
        if stage.name == "pretrain":
            continue
        seed = stage.backbone.rpartition(".seed")[2] if ".seed" in stage.backbone else "0"
        assert _flag(stage.argv, "--seed") == seed, stage.argv  # one flag for every stage
        if stage.argv[2].startswith("benchmarks."):  # a probe: its random init too
            assert _flag(stage.argv, "--init-seed") == seed
        assert "--trials" not in stage.argv  # pretraining seeds, not probe repetitions
        if stage.needs:
            assert stage.needs == pretrain[stage.backbone].outputs[0]
    controls = {s.backbone for s in stages if "random" in s.argv}
    assert controls == {"random-init", "random-init.seed1", "random-init.seed2"}


def test_one_seed_plans_the_commands_as_before(tmp_path: Path) -> None:
    stages = suite.plan(_args(tmp_path, 1), tmp_path / "out")
    assert all("--seed" not in s.argv and "--init-seed" not in s.argv for s in stages)
    assert {s.backbone for s in stages} == {"simclr", "simclr+rcl", "random-init"}


def test_probe_scripts_take_trials_from_a_first_seed(tmp_path: Path, tiny_data: Path) -> None:
    from benchmarks.probes import colorful_mnist
    from benchmarks.results.leaderboard import read_rows

    board = tmp_path / "board.csv"
    assert colorful_mnist.main(
        lambda argv: colorful_mnist.run_task(colorful_mnist.TASK, argv),
        ["--weights", "random", "--arch", "resnet18", "--linear-epochs", "1", "--trials", "2",
         "--seed", "5", "--data", str(tiny_data / "colorful_mnist"), "--out",
         str(tmp_path / "run"), "--leaderboard", str(board), "--cache-dir",
         str(tmp_path / "cache"), "--device", "cpu"]) == 0
    rows = read_rows(board)[1]
    assert {r["seed"] for r in rows if r["protocol"] == "linear"} == {"5", "6"}
    assert {r["seed"] for r in rows if r["protocol"] == "knn5"} == {"5"}
    import numpy as np

    with np.load(tmp_path / "run" / "predictions.npz") as saved:
        assert {"pred.linear.digit_top1.seed5", "pred.linear.digit_top1.seed6",
                "pred.knn5.digit_top1.seed5", "labels.digit_top1", "test_set"} <= set(saved)
        correct = saved["pred.linear.digit_top1.seed6"] == saved["labels.digit_top1"]
    row = next(r for r in rows if r["protocol"] == "linear" and r["seed"] == "6"
               and r["metric"] == "digit_top1")
    assert abs(float(row["value"]) - 100 * correct.mean()) < 1e-3  # the row is its predictions
    assert row["predictions"] == str((tmp_path / "run" / "predictions.npz").resolve())
    assert float(row["params"]) > 10 and float(row["gflops"]) > 0  # fvcore: ResNet-18


def test_seeded_entries_alone_get_the_seeds_and_extra_seeds_run_the_claims_tasks(
        tmp_path: Path) -> None:
    args = _args(tmp_path, 3)
    args.panel, args.seeded = ["simclr", "mocov2", "mocov2+rcl"], ["mocov2", "mocov2+rcl"]
    args.seed_tasks = ["colorful_mnist_fixed", "colorful_mnist_finetune"]
    stages = suite.plan(args, tmp_path / "out")
    pretrained = {s.backbone for s in stages if s.name == "pretrain"}
    assert pretrained == {"simclr", "mocov2", "mocov2.seed1", "mocov2.seed2", "mocov2+rcl",
                          "mocov2+rcl.seed1", "mocov2+rcl.seed2"}
    assert all("--seed" not in s.argv and "--first-seed" not in s.argv
               for s in stages if s.backbone in ("simclr", "random-init"))
    extra = {s.name for s in stages if ".seed" in s.backbone and s.name != "pretrain"}
    assert extra == {"colorful_mnist_fixed"}  # fine-tuning is a path check: one backbone


def test_the_main_job_seeds_the_rcl_pair(tmp_path: Path, tiny_data: Path,
                                         capsys) -> None:
    data = [f"--data={k}={tiny_data / k}" for k in data_sets()]
    assert suite.main(["--out", str(tmp_path / "o"), "--dry-run", *data]) == 0
    printed = capsys.readouterr().out
    assert "mocov2+rcl.seed2: pretrain" in printed and "simclr.seed1" not in printed
    with __import__("pytest").raises(SystemExit):
        suite.main(["--out", str(tmp_path / "o"), "--dry-run", "--seeded", "nope", *data])
    assert "--seeded nope: not in --panel" in capsys.readouterr().err
