"""The reference speed and the expected wall time (benchmarks/runner/speed.py): the layout model,
the
progress line's ETA, the printout of a tiny suite run, the path-check subset of the plan and a
budget whose work does not depend on the measured speed."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest

from benchmarks.runner import speed, suite
from benchmarks.runner.stages import Stage, after_of
from benchmarks.runner.tasks import TASKS, data_sets, suite_stages
from pretrain.open_backbone import RANDOM_METHOD


def test_the_layout_runs_stages_in_order_jobs_at_a_time_after_their_inputs() -> None:
    costs, after = [10.0, 4.0, 3.0, 3.0], [None, None, 0, 1]
    assert speed.expected_left(costs, after, jobs=1, seconds_per_cost=1.0) == 20.0
    # jobs 2: 0 and 1 start; 3 follows 1 at 4 (ends 7); 2 waits for 0's end at 10
    assert speed.expected_left(costs, after, jobs=2, seconds_per_cost=1.0) == 13.0
    assert speed.expected_left(costs, after, jobs=2, seconds_per_cost=2.5) == 32.5
    # a stage waits for its maker even with a slot free, and takes the first free slot after
    assert speed.expected_left([1.0, 5.0, 1.0], [None, None, 0], jobs=2,
                               seconds_per_cost=1.0) == 5.0


def test_the_estimate_is_corrected_by_the_finished_stages_and_counts_the_running() -> None:
    costs, after = [10.0, 10.0, 10.0, 10.0], [None, None, None, None]
    # stage 0 took twice its prediction: the others are predicted twice as long
    assert speed.expected_left(costs, after, 1, 1.0, done={0: 20.0}) == 60.0
    # a stage finished in an earlier run corrects nothing
    assert speed.expected_left(costs, after, 1, 1.0, done={0: None}) == 30.0
    # stage 1 has run 4 of its 10 s: 6 left beside stage 2, then stage 3
    assert speed.expected_left(costs, after, 2, 1.0, done={0: None}, running={1: 4.0}) == 16.0


def test_unknown_costs_are_learned_from_the_finished_stages() -> None:
    costs, after = [None, None, None], [None, None, None]
    assert speed.expected_left(costs, after, 1, 1.0) is None
    assert speed.expected_left(costs, after, 1, 1.0, done={0: 7.0}) == 14.0


def test_the_progress_line_prints_the_model(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    made = tmp_path / "made"
    stages = [Stage("a", "pretrain", [sys.executable, "-c", "import time; time.sleep(5); "
                                      f"open({str(made)!r}, 'w')"], outputs=[str(made)]),
              Stage("a", "task", [sys.executable, "-c", "pass"], needs=str(made)),
              Stage("b", "task", [sys.executable, "-c", "pass"]),
              Stage("c", "task", [sys.executable, "-c", "pass"])]
    calls = []
    model = speed.expected_left
    monkeypatch.setattr(speed, "expected_left", lambda *a, **k: calls.append(k) or model(*a, **k))
    suite.run(stages, tmp_path / "out", jobs=2, costs=[300.0, 120.0, 60.0, 60.0],
              seconds_per_cost=0.5)
    first = capsys.readouterr().out.splitlines()[0]
    # 0 and 2 at once (150 s, 30 s), 3 after 2, then 1 after 0: 150 + 60 s = 3.5 min
    assert re.search(r"\| ETA 3\.5 min\] a: pretrain$", first), first
    # c starts while a's pretraining runs: the model is told how long it has run, and that b
    # ended, with its observed time
    at_c = calls[2]
    assert set(at_c["running"]) == {0} and at_c["running"][0] > 0
    assert set(at_c["done"]) == {2} and at_c["done"][2] > 0


def _args(tmp_path: Path, **overrides: object) -> argparse.Namespace:
    data = {key: str(tmp_path / key) for key in data_sets()}
    values = dict(panel=list(suite.DEFAULT_PANEL), arch="resnet18", budget="cpu",
                  pretrain_steps=None, checkpoint=[], data=data, synthetic=set(data), gpus=1,
                  tasks=list(suite_stages()))
    return argparse.Namespace(**{**values, **overrides})


def test_path_checks_run_on_one_pretrained_backbone(tmp_path: Path) -> None:
    checks = {name for name, (task, protocol) in suite_stages().items()
              if protocol in task.path_checks}
    assert checks >= {"coco_det", "mpii_fixed", "mpii_finetune"}
    probes = set(suite_stages()) - checks
    assert {"colorful_mnist_fixed", "fairface_fixed"} <= probes
    panel = list(suite.DEFAULT_PANEL)
    for budget, on in (("cpu", {panel[0]}), ("full", {*panel, RANDOM_METHOD})):
        stages = suite.plan(_args(tmp_path, budget=budget), tmp_path / "out")
        ran = {name: {s.backbone for s in stages if s.name == name} for name in suite_stages()}
        assert all(ran[name] == on for name in checks), (budget, ran)
        assert all(ran[name] == {*panel, RANDOM_METHOD} for name in probes)
        assert speed.path_checks(stages, budget)["backbones"] == (
            [panel[0]] if budget == "cpu" else [])
    # no panel: the first --checkpoint, else the control
    theirs = _args(tmp_path, panel=[], checkpoint=[("theirs", str(tmp_path / "t.pth"))])
    assert {s.backbone for s in suite.plan(theirs, tmp_path) if s.name == "coco_det"} == {"theirs"}
    alone = _args(tmp_path, panel=[])
    assert {s.backbone for s in suite.plan(alone, tmp_path) if s.name == "coco_det"} == {
        RANDOM_METHOD}


def test_the_default_panel_pairs_every_regularizer_with_its_papers_base() -> None:
    panel = set(suite.DEFAULT_PANEL)
    regularized = [entry for entry in panel if "+" in entry]
    assert {entry.split("+")[1] for entry in regularized} == {"rcl", "metamask", "msr", "mcr"}
    assert all(entry.split("+")[0] in panel for entry in regularized)
    assert "mocov2+rcl" in panel  # RCL's contrastive branch is MoCo's (RCL, Implementation)


def test_the_main_job_is_priced_and_fits_20_minutes_on_a_slow_machine(tmp_path: Path) -> None:
    """The default panel with its seeded claim (the RCL pair over 3 seeds) on the cpu budget:
    within 20 minutes on a machine at 63 images/s (the slow machine of issue 25)."""
    from benchmarks.runner.plan import DEFAULT_SEEDED, DEFAULT_SEEDS, SEED_TASKS

    stages = suite.plan(_args(tmp_path, seeds=DEFAULT_SEEDS, seeded=DEFAULT_SEEDED,
                              seed_tasks=SEED_TASKS), tmp_path / "out")
    assert {s.backbone for s in stages if s.name == "pretrain"} >= {
        "mocov2.seed2", "mocov2+rcl.seed2"} and "simclr.seed1" not in {s.backbone for s in stages}
    costs = speed.stage_costs(stages, "cpu", applies=True)
    assert None not in costs, [s.name for s, c in zip(stages, costs) if c is None]
    at_reference = speed.REFERENCE_IMAGES_PER_S / speed.THREADS_RATIO  # on one thread
    wall = speed.expected_left(costs, after_of(stages), 2,
                               speed.seconds_per_cost(at_reference, 2))
    table = speed.COSTS["cpu"]
    assert (wall + table.start + table.data + table.report) * 120 / 63 <= 20 * 60
    # --pretrain-steps is priced: the step count is read from the stage's own command line
    longer = suite.plan(_args(tmp_path, pretrain_steps=500), tmp_path / "out")
    more = speed.stage_costs(longer, "cpu", applies=True)
    base = speed.stage_costs(suite.plan(_args(tmp_path), tmp_path / "out"), "cpu", applies=True)
    assert more[0] > base[0] and more[-1] == base[-1]


def test_the_work_does_not_depend_on_the_measured_speed(tmp_path: Path, tiny_data: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    import pretrain.synthetic

    monkeypatch.setattr(pretrain.synthetic, "default_root", lambda size: tiny_data)
    planned, printed = [], []
    for images_per_s in (30.0, 300.0):
        monkeypatch.setattr(speed, "measure_reference_speed", lambda v=images_per_s, **_: v)
        monkeypatch.setattr(suite, "run", lambda stages, *_, **__: planned.append(
            [s.argv for s in stages]) or [])
        assert suite.main(["--out", str(tmp_path / "out"), "--jobs", "2"]) == 0
        printed.append(capsys.readouterr().out)
    assert planned[0] == planned[1]
    minutes = [float(re.search(r"expected wall time ([\d.]+) min", p).group(1)) for p in printed]
    assert minutes[0] == pytest.approx(10 * minutes[1], rel=0.05)


@pytest.mark.slow
def test_a_tiny_run_prints_and_records_the_reference_speed(tmp_path: Path, tiny_data: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "suite"
    argv = ["--out", str(out), "--panel", "", "--tasks", "colorful_mnist_fixed", "--budget",
            "smoke", *[f"--data={name}={tiny_data / name}" for name in
                       data_sets()]]
    assert suite.main(argv) == 0
    printed = capsys.readouterr().out
    found = re.search(r"\[suite\] reference speed ([\d.]+) images/s \(the budget is sized for 120: "
                      r"tools/bench_pretrain.py --methods simclr", printed)
    assert found and float(found.group(1)) > 0, printed
    run = json.loads((out / "state" / "speed.json").read_text())
    assert f"{run['images_per_s']:.1f}" == found.group(1) and run["wall_s"] > 0
    report = (out / "report.md").read_text()
    assert f"Reference speed of this machine: {run['images_per_s']:.1f} images/s" in report
    assert "fixed" not in TASKS["colorful_mnist"].path_checks


def test_speed_at_prices_the_default_main_job(capsys: pytest.CaptureFixture) -> None:
    """``python -m benchmarks.speed --at 63``: the README's figure for a slow machine, from the
    same plan as the main job (its RCL pair over 3 seeds)."""
    from benchmarks.runner import speed_cli

    assert speed_cli.main(["--at", "63"]) == 0
    line = capsys.readouterr().out
    minutes = float(line.split("expected ")[1].split(" min")[0])
    assert "42 stages" in line and minutes <= 20
