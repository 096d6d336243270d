"""benchmarks/runner/executor.py: the suite's --dry-run, --budget full's arch check, and stages as
jobs
through submitit (its LocalExecutor on a CPU) with the local runner's graph and markers."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from benchmarks.runner import executor, suite
from benchmarks.runner.stages import Stage
from benchmarks.runner.tasks import data_sets


def _data_flags(tiny_data: Path) -> list[str]:
    return [arg for key in data_sets()
            for arg in ("--data", f"{key}={tiny_data / key}")]


def test_dry_run_prints_every_stage_with_its_gpus_and_runs_nothing(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "suite"
    assert suite.main(["--out", str(out), "--panel", "simclr", "--budget", "full", "--arch",
                       "resnet50", "--gpus", "8", "--tasks", "coco_det,mpii_fixed,fairface_fixed",
                       "--dry-run", *_data_flags(tiny_data)]) == 0
    text = capsys.readouterr().out
    assert "dry run: 7 stages" in text and not out.exists()
    blocks = re.split(r"\n\s*\d+\. ", text)[1:]  # one per stage
    pretrain = next(b for b in blocks if ": pretrain" in b)
    assert "gpus 8" in pretrain and "tools/pretrain.sh" in pretrain and "--gpus 8" in pretrain
    coco = next(b for b in blocks if "simclr: coco_det" in b)
    assert "gpus 8" in coco and "--gpus 8" in coco and "(made by stage 1)" in coco
    assert "coco_R_50_C4_1x_moco.yaml" in coco
    mpii = next(b for b in blocks if "simclr: mpii_fixed" in b)
    assert "-m transfer.mpii_pose --gpus 8" in mpii
    probe = next(b for b in blocks if "simclr: fairface_fixed" in b)
    assert "gpus 1" in probe and "--gpus" not in probe.split("$")[1]
    assert f"{suite.RANDOM_METHOD}: coco_det" in text  # the random-init control, always


def test_full_budget_needs_each_protocols_arch(tiny_data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        suite.main(["--out", str(tmp_path), "--budget", "full", "--dry-run",
                    *_data_flags(tiny_data)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "coco_det (resnet50)" in err and "mpii_pose (resnet50)" in err
    assert "not --arch resnet18" in err
    assert executor.full_budget_problem("full", "resnet18", ["colorful_mnist_fixed"]) is None
    assert executor.full_budget_problem("cpu", "resnet18", ["coco_det"]) is None


def _stage(backbone: str, name: str, code: str, needs: str | None = None,
           outputs: tuple[str, ...] = ()) -> Stage:
    return Stage(backbone, name, [sys.executable, "-c", code], needs=needs,
                 outputs=list(outputs))


def test_stages_run_as_submitit_jobs_in_graph_order_with_markers(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    weights = tmp_path / "w.bin"
    stages = [
        _stage("a", "pretrain", f"open({str(weights)!r}, 'w').write('w'); print('trained')",
               outputs=(str(weights),)),
        _stage("a", "task", f"assert open({str(weights)!r}).read() == 'w'; print('scored')",
               needs=str(weights)),
        _stage("b", "pretrain", "import sys; print('diverged'); sys.exit(3)",
               outputs=(str(tmp_path / "never.bin"),)),
        _stage("b", "task", "print('must not run')", needs=str(tmp_path / "never.bin")),
    ]
    jobs = executor.make_executor("submitit-local", out / "jobs")
    records = executor.run_jobs(stages, out, jobs, use_gpus=False)
    assert [r["status"] for r in records] == ["done", "done", "failed", "skipped"]
    assert "exit 3: diverged" in records[2]["reason"]
    assert (out / "logs" / "a" / "task.log").read_text().strip() == "scored"
    marker = json.loads((out / "state" / "a__task.json").read_text())
    assert marker["status"] == "done" and marker["job"]

    again = executor.run_jobs(stages, out, jobs, use_gpus=False)  # skips what is done
    assert [r["status"] for r in again] == ["done", "done", "failed", "skipped"]
    assert again[0] == records[0] and again[1] == records[1]  # the same job: not rerun
    assert again[2]["job"] != records[2]["job"]  # the failed stage is retried

    weights.unlink()  # a done stage whose output is gone is remade, and what reads it
    third = executor.run_jobs(stages, out, jobs, use_gpus=False)
    assert [r["job"] != a["job"] for r, a in zip(third[:2], again[:2])] == [True, True]
    assert [r["status"] for r in third] == ["done", "done", "failed", "skipped"]


def test_per_task_pretraining_gives_each_task_the_backbone_of_its_data(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--pretrain-per-task (RCL's protocol): one pretraining per data set, with the paper's epochs
    per data set in full, and each task reads the backbone of its own data."""
    out = tmp_path / "suite"
    assert suite.main(["--out", str(out), "--panel", "simclr+rcl", "--budget", "full", "--arch",
                       "resnet50", "--pretrain-per-task", "--tasks",
                       "mpii_fixed,fairface_fixed,colorful_mnist_finetune", "--dry-run",
                       *_data_flags(tiny_data)]) == 0
    blocks = re.split(r"\n\s*\d+\. ", capsys.readouterr().out)[1:]
    epochs = {"mpii": "300", "fairface": "1000", "colorful_mnist": "200"}
    for key, n in epochs.items():
        pretrain = next(b for b in blocks if b.startswith(f"simclr+rcl: pretrain_{key}\n"))
        assert f"--epochs {n} --data {key}={tiny_data / key}" in pretrain
    for stage, key in (("mpii_fixed", "mpii"), ("fairface_fixed", "fairface"),
                       ("colorful_mnist_finetune", "colorful_mnist")):
        task = next(b for b in blocks if b.startswith(f"simclr+rcl: {stage}\n"))
        assert f"--weights {out / 'pretrain' / f'simclr_rcl_{key}'}/backbone.safetensors" in task
    assert sum(": pretrain" in b for b in blocks) == 3
