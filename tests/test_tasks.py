"""The table of tasks (benchmarks/runner/tasks.py): each entry is consistent with its script, data
layout and generator, and the suite's plan, --tasks list and report follow the table alone."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from benchmarks.results import gaps, tables
from benchmarks.results.gaps import Gap
from benchmarks.runner import suite, tasks
from benchmarks.runner.tasks import TASKS, SuiteTask, suite_stages
from pretrain.data import LAYOUTS
from pretrain.synthetic import GENERATORS

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(TASKS))
def test_entry_matches_its_script_layout_and_generator(name: str) -> None:
    task = TASKS[name]
    script = importlib.import_module(task.module)
    assert getattr(script.TASK, "name", script.TASK) == name  # the rows it writes
    assert task.reader is LAYOUTS[task.data].check
    assert task.data in GENERATORS  # its embedded default
    assert set(task.budgets) <= set(suite.PRETRAIN_BUDGETS)
    assert all(set(flags) <= set(task.protocols) for flags in task.budgets.values())


def _args(tmp_path: Path, **overrides: object) -> argparse.Namespace:
    data = {key: str(tmp_path / key) for key in GENERATORS}
    values = dict(panel=["simclr"], arch="resnet34", budget="smoke", pretrain_steps=None,
                  checkpoint=[("theirs", str(tmp_path / "theirs.pth"))], data=data,
                  synthetic=set(data), gpus=1, tasks=list(suite_stages()))
    return argparse.Namespace(**{**values, **overrides})


def test_plan_gives_the_control_one_set_of_flags_in_every_stage(tmp_path: Path) -> None:
    stages = suite.plan(_args(tmp_path, budget="full"), tmp_path / "out")  # every stage on all
    by_backbone: dict[str, list[suite.Stage]] = {}
    for stage in stages:
        by_backbone.setdefault(stage.backbone, []).append(stage)
    assert [s.name for s in by_backbone["random-init"]] == list(suite_stages())
    for stage in by_backbone["random-init"]:
        at = stage.argv.index("--weights")
        assert stage.argv[at:at + 6] == ["--weights", "random", "--arch", "resnet34",
                                         "--stem", "imagenet"]
        assert stage.needs is None  # nothing to wait for
    for stage in by_backbone["theirs"]:
        assert stage.needs == str(tmp_path / "theirs.pth") and "random" not in stage.argv
    made = by_backbone["simclr"][0].outputs[0]
    assert all(s.needs == made for s in by_backbone["simclr"][1:])


def test_a_new_task_is_one_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture) -> None:
    """An entry alone puts a task in the plan, in --tasks and in the report's gap column."""
    toy = SuiteTask("toy", "benchmarks.probes.toy", ("fixed", "finetune"), "fairface",
                    budgets={"smoke": {"finetune": ("--epochs", "0.01")}})
    monkeypatch.setitem(tasks.TASKS, "toy", toy)
    monkeypatch.setitem(gaps.GAPS, "toy", Gap("a-b", ("a_top1",), ("b_top1",)))
    assert list(suite_stages())[-2:] == ["toy_fixed", "toy_finetune"]
    planned = [s for s in suite.plan(_args(tmp_path, checkpoint=[]), tmp_path / "out")
               if s.name.startswith("toy") and s.backbone == "simclr"]
    assert [s.name for s in planned] == ["toy_fixed", "toy_finetune"]
    fixed, finetune = (s.argv for s in planned)
    assert fixed[1:3] == ["-m", "benchmarks.probes.toy"] and fixed[3:5] == ["--protocol", "fixed"]
    assert fixed[fixed.index("--data") + 1] == str(tmp_path / "fairface")
    assert finetune[-2:] == ["--epochs", "0.01"]  # the budget's flags, last
    with pytest.raises(SystemExit):
        suite.main(["--out", str(tmp_path), "--tasks", "toy_nothing"])
    assert "unknown ['toy_nothing']; choose from coco_det," in capsys.readouterr().err
    assert "toy_fixed, toy_finetune" in suite_help(capsys)

    rows = [{"backbone_id": "x", "method": "simclr", "regularizer": "none", "task": "toy",
             "protocol": "linear", "metric": m, "value": v, "seed": "0", "source": "measured"}
            for m, v in (("a_top1", "40"), ("b_top1", "90"))]
    table = tables.markdown(rows)
    assert "| backbone | protocol | a_top1 | b_top1 | a-b | source |" in table
    assert "| 40.0 | 90.0 | -50.0 | measured |" in table


def suite_help(capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit):
        suite.main(["--help"])
    return " ".join(capsys.readouterr().out.split())


def test_a_bad_data_root_is_refused_by_its_reader_before_any_stage(
        tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "mpii" / "annotations").mkdir(parents=True)
    data = [f"--data={key}={tiny_data / key}" for key in ("coco", "fairface", "colorful_mnist")]
    # one cheap stage, should the check be missing: the control's MPII stage, which then fails
    argv = ["--out", str(tmp_path / "out"), "--panel", "", "--tasks", "mpii_fixed", "--budget",
            "smoke", *data, "--data", f"mpii={tmp_path / 'mpii'}"]
    with pytest.raises(SystemExit) as info:
        suite.main(argv)
    assert info.value.code == 2
    assert "mpii_train.json: missing annotation file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_given_checkpoints_keep_their_names_and_each_arch_has_its_control(tmp_path: Path) -> None:
    args = _args(tmp_path, arch="resnet18", checkpoint_archs={"theirs": "resnet50"})
    stages = suite.plan(args, tmp_path / "out")
    controls = {s.backbone: s.argv[s.argv.index("--arch") + 1] for s in stages
                if "random" in s.argv}
    assert controls == {"random-init": "resnet18", "random-init.resnet50": "resnet50"}
    for stage in stages:
        named = stage.argv[stage.argv.index("--backbone-name") + 1] if (
            "--backbone-name" in stage.argv) else None
        assert named == ("theirs" if stage.backbone == "theirs" else None), stage.argv
    alone = suite.plan(_args(tmp_path, panel=[], checkpoint_archs={"theirs": "resnet50"}),
                       tmp_path / "out")
    assert {s.backbone for s in alone if "random" in s.argv} == {"random-init.resnet50"}
