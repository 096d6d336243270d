"""Hostile inputs (issue 18): what a careless user or an attacker can hand the suite, one test per
case. Each asserts the exit code, a single error line naming the file or flag (no traceback), that
no code ran from a file (a planted pickle or YAML tag would create a file), and that no file
outside the command's own outputs changed (checksums before and after)."""
from __future__ import annotations

import csv
import errno
import hashlib
import importlib.util
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml
from test_checkpoint import _PlantsAFile
from test_pretrain import _cli_flags, tiny_config
from torch import nn

import transfer.compat  # noqa: F401,I001  (its guards, before detectron2 and mmengine)
from benchmarks.results import leaderboard, leaderboard_cli, tables
from benchmarks.runner import suite
from benchmarks.runner.tasks import data_sets
from pretrain import synthetic
from pretrain import train as train_module
from pretrain.checkpoint import (
    CheckpointError,
    load_backbone,
    load_pickle_arrays,
    load_torch,
    save_backbone,
)
from transfer import coco_det, compat, detectron2_compat

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parent.parent
CPU_CONFIG = str(REPO / "transfer" / "configs" / "coco_cpu_FPN_128px.yaml")


# ----------------------------------------------------------------------------- helpers
def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_untouched(folder: Path, before: dict[str, str], outputs: tuple[str, ...] = ()) -> None:
    """Every file of ``before`` is unchanged; new files lie only under ``outputs``."""
    after = _checksums(folder)
    changed = [p for p in before if after.get(p) != before[p]]
    new = [p for p in after if p not in before and not any(p.startswith(o) for o in outputs)]
    assert not changed and not new, f"changed {changed}, new outside the outputs {new}"


def _one_error_line(err: str, *names: str) -> str:
    """The stderr of a refused command: no traceback, exactly one error line, naming ``names``."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def _plant(path: Path, planted: Path) -> Path:
    """A checkpoint that would create ``planted`` when unpickled."""
    payload = {"model": {"w": _PlantsAFile(str(planted))}, "__author__": "stranger"}
    if path.suffix in (".pth", ".pyth"):
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path


def _row(backbone: str, value: float | str, metric: str = "digit_top1") -> dict:
    return {"backbone_id": backbone, "method": "simclr", "task": "colorful_mnist",
            "protocol": "linear", "metric": metric, "value": value}


# ----------------------------------------------------------------------------- case 1: engines
def _mmengine_runner(run: Path, **kwargs) -> None:
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Model(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 2)

        def forward(self, *args, **kw) -> dict:
            return {}

    Runner(model=Model(), work_dir=str(run), **kwargs).load_or_resume()


def _detectron2_weights(evil: Path, run: Path) -> None:
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(nn.Linear(2, 2)).load(str(evil))  # how MODEL.WEIGHTS is read


def _detectron2_resume(evil: Path, run: Path) -> None:
    from detectron2.checkpoint import DetectionCheckpointer

    (run / "last_checkpoint").write_text(evil.name)
    DetectionCheckpointer(nn.Linear(2, 2), save_dir=str(run)).resume_or_load("", resume=True)


def _detectron2_proposals(evil: Path, run: Path) -> None:
    from detectron2.data.build import load_proposals_into_dataset

    load_proposals_into_dataset([{"image_id": 1}], str(evil))


def _mmengine_resume(evil: Path, run: Path) -> None:
    (run / "last_checkpoint").write_text(str(evil))
    _mmengine_runner(run, resume=True)


def _mmengine_load(evil: Path, run: Path) -> None:
    import mmengine

    mmengine.load(str(evil))


ENGINE_LOADS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "detectron2 MODEL.WEIGHTS .pkl": (_detectron2_weights, "weights.pkl"),
    "detectron2 MODEL.WEIGHTS .pth": (_detectron2_weights, "weights.pth"),
    "detectron2 MODEL.WEIGHTS .pyth": (_detectron2_weights, "weights.pyth"),
    "detectron2 resume, last_checkpoint naming a .pkl": (_detectron2_resume, "model.pkl"),
    "detectron2 proposal file": (_detectron2_proposals, "proposals.pkl"),
    "mmengine load_from": (lambda evil, run: _mmengine_runner(run, load_from=str(evil)),
                           "weights.pth"),
    "mmengine resume (last_checkpoint)": (_mmengine_resume, "iter_9.pth"),
    "mmengine.load of a .pkl": (_mmengine_load, "annotations.pkl"),
}


def test_detectron2_last_checkpoint_naming_a_file_outside_the_run_is_refused(
        tmp_path: Path) -> None:
    from detectron2.checkpoint import DetectionCheckpointer

    outside = tmp_path / "elsewhere.pth"
    torch.save({"model": {}}, outside)  # readable: only the confinement can refuse it
    run = tmp_path / "run"
    run.mkdir()
    (run / "last_checkpoint").write_text("../elsewhere.pth")
    with pytest.raises(CheckpointError, match="last_checkpoint names .*outside the run folder"):
        DetectionCheckpointer(nn.Linear(2, 2), save_dir=str(run)).resume_or_load("", resume=True)


@pytest.mark.parametrize("place", list(ENGINE_LOADS))
def test_engine_loaders_never_unpickle_a_planted_file(place: str, tmp_path: Path) -> None:
    load, name = ENGINE_LOADS[place]
    planted, run = tmp_path / "planted", tmp_path / "run"
    run.mkdir()
    evil = _plant(run / name, planted)
    with pytest.raises(CheckpointError, match="refused") as raised:
        load(evil, run)
    message = str(raised.value)
    assert "\n" not in message and name in message
    assert not planted.exists(), f"{place} ran code from the file"


def test_engine_yaml_readers_refuse_python_tags(tmp_path: Path) -> None:
    import mmengine
    from detectron2.config import get_cfg

    planted = tmp_path / "planted"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"MODEL: !!python/object/apply:pathlib.Path.touch [{str(planted)!r}]\n")
    with pytest.raises(compat.UnsafeConfigError, match="evil.yaml.*Python tags are refused"):
        get_cfg().merge_from_file(str(evil))  # detectron2's default is yaml.unsafe_load
    with pytest.raises(compat.UnsafeConfigError, match="Python tags are refused"):
        mmengine.load(str(evil))  # mmengine's default is yaml.Loader
    assert not planted.exists()


def test_detectron2_base_chain_stays_in_the_zoo_and_transfer_configs(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    planted = tmp_path / "planted"
    (tmp_path / "base.yaml").write_text(
        f"MODEL: !!python/object/apply:pathlib.Path.touch [{str(planted)!r}]\n")
    escapes = {"zoo.yaml": "model_zoo:" + os.path.relpath(tmp_path / "base.yaml",
                                                          compat.detectron2_zoo()),
               "relative.yaml": "../" + tmp_path.name + "/base.yaml",
               "absolute.yaml": str(tmp_path / "base.yaml")}
    for name, base in escapes.items():
        (tmp_path / name).write_text(f"_BASE_: {base!r}\n")
    (tmp_path / "list.yaml").write_text("- MODEL\n- WEIGHTS\n")  # not a mapping
    before = _checksums(tmp_path)
    for name in escapes:
        assert coco_det.main(["--weights", "random", "--config", str(tmp_path / name),
                              "--data", str(tiny_data / "coco"), "--out", str(tmp_path / "run"),
                              "--leaderboard", str(tmp_path / "board.csv")]) == 2
        _one_error_line(capsys.readouterr().err, name, "outside detectron2's model zoo")
    assert coco_det.main(["--weights", "random", "--config", str(tmp_path / "list.yaml"),
                          "--data", str(tiny_data / "coco"), "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys.readouterr().err, "list.yaml", "expected a mapping")
    _assert_untouched(tmp_path, before)

    # a chain inside the trusted folders is still read safely, by coco_det and by detectron2
    monkeypatch.setattr(detectron2_compat, "config_roots", lambda: [tmp_path.resolve()])
    (tmp_path / "chain.yaml").write_text("_BASE_: base.yaml\n")
    with pytest.raises(coco_det.CocoDetError, match="base.yaml: cannot be read as YAML"):
        coco_det.load_config(tmp_path / "chain.yaml")
    from detectron2.config import get_cfg

    with pytest.raises(compat.UnsafeConfigError, match="base.yaml: not a plain YAML"):
        get_cfg().merge_from_file(str(tmp_path / "chain.yaml"))
    assert not planted.exists()


def _reset_detectron2_logging() -> None:
    from detectron2.utils.logger import setup_logger

    setup_logger.cache_clear()
    for name in ("detectron2", "fvcore", "d2"):
        logging.getLogger(name).handlers.clear()


@pytest.fixture
def detectron2_logging() -> Iterator[None]:
    """detectron2's ``setup_logger`` caches its stream handlers: an earlier in-process run (this
    test's or another file's) leaves them writing to a captured stream that is closed by now."""
    _reset_detectron2_logging()
    yield
    _reset_detectron2_logging()


@pytest.mark.usefixtures("detectron2_logging")
@pytest.mark.parametrize("mode", ["--eval-only", "--resume"])
def test_coco_run_folder_naming_a_pickle_is_refused(mode: str, tiny_data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Issue 18 case 2: a run folder whose last_checkpoint names a planted .pkl."""
    run, planted = tmp_path / "run", tmp_path / "planted"
    run.mkdir()
    _plant(run / "model_final.pkl", planted)
    (run / "last_checkpoint").write_text("model_final.pkl")
    (run / "backbone.json").write_text(json.dumps({
        "source": "random", "backbone_id_from_file": False, "converted": str(run / "none.pkl"),
        "meta": {"arch": "resnet18", "method": "random", "backbone_id": "random-resnet18"}}))
    before = _checksums(tmp_path)
    assert coco_det.main([mode, "--data", str(tiny_data / "coco"), "--out", str(run),
                          "--config", CPU_CONFIG, "--leaderboard",
                          str(tmp_path / "board.csv")]) == 2
    _one_error_line(capsys.readouterr().err, "model_final.pkl", "refused to unpickle")
    assert not planted.exists()
    # detectron2 writes its config dump, log and events into the run folder; nothing else changes
    _assert_untouched(tmp_path, before, outputs=("run/",))


# ----------------------------------------------------------------------------- case 3: resume
def test_resume_refuses_flags_that_change_the_run_before_writing_anything(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = train_module.train(tiny_config(tiny_data, tmp_path, "simclr", steps=1))
    before = _checksums(tmp_path)
    assert train_module.main(["--resume", str(run), "--method", "byol", "--batch-size", "4",
                              "--steps", "2"]) == 2
    line = _one_error_line(capsys.readouterr().err, "--method 'byol'", "--batch-size 4")
    assert "--steps 2" not in line
    _assert_untouched(tmp_path, before)
    state = (run / "last_state.pt").read_bytes()
    (run / "last_state.pt").write_bytes(state[:100])  # a resume that fails after the check
    before = _checksums(tmp_path)
    assert train_module.main(["--resume", str(run), "--steps", "2"]) == 2
    _one_error_line(capsys.readouterr().err, "last_state.pt")
    _assert_untouched(tmp_path, before, outputs=("simclr/log.txt",))
    (run / "last_state.pt").write_bytes(state)
    # a harmless change continues the same run
    assert train_module.main(["--resume", str(run), "--steps", "2", "--log-every", "1"]) == 0
    assert load_torch(run / "last_state.pt")["step"] == 2
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["method"], saved["steps"], saved["log_every"]) == ("simclr", 2, 1)


# ----------------------------------------------------------------------------- cases 4-5: outputs
def test_leaderboard_outputs_never_replace_a_file_they_did_not_write(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    board = tmp_path / "leaderboard.csv"
    leaderboard.write_rows(board, [_row("a", 20.0)])
    (tmp_path / "notes.md").write_text("my notes\n")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n not the suite's")
    before = _checksums(tmp_path)
    for command, out in (("markdown", "leaderboard.csv"), ("markdown", "notes.md"),
                         ("markdown", "table.txt"), ("plot", "leaderboard.csv"),
                         ("plot", "photo.png")):
        assert leaderboard_cli.main([command, "--csv", str(board),
                                 "--out", str(tmp_path / out)]) == 2
        _one_error_line(capsys.readouterr().err, f"--out {tmp_path / out}")
    _assert_untouched(tmp_path, before)
    for command, out in (("markdown", "table.md"), ("plot", "panel.png")):
        for _ in range(2):  # the second run replaces its own earlier output
            assert leaderboard_cli.main([command, "--csv", str(board),
                                     "--out", str(tmp_path / out)]) == 0
    assert "[a]" in (tmp_path / "table.md").read_text()


def test_suite_checkpoint_names_never_become_paths_outside_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"any")
    out = tmp_path / "out"

    def reached(*args) -> None:
        raise AssertionError("the suite started with an argument it should have refused")

    monkeypatch.setattr(synthetic, "default_root", reached)
    sets = [f"--data={name}={tmp_path}" for name in ("coco", "mpii", "colorful_mnist")]
    named = "NAME becomes a folder name"
    bad = {**{f"--checkpoint={name}={weights}": named for name in
              ("../escape", str(tmp_path / "abs"), "a/b", "..", ".hidden", "x" * 65)},
           f"--checkpoint=simclr={weights}": "clashes with the panel",
           f"--checkpoint=random-init={weights}": "clashes with the panel",
           f"--checkpoint=ok={tmp_path}": "no such file",  # a folder, not a checkpoint
           f"--data=fairface={weights}": "no such folder",
           f"--data=imagenet={tmp_path}": "unknown set",
           f"--data=coco={tmp_path}": "given twice"}
    before = _checksums(tmp_path)
    for flag, problem in bad.items():
        with pytest.raises(SystemExit) as exited:
            suite.main(["--out", str(out), "--panel", "simclr", *sets, flag])
        assert exited.value.code == 2, flag
        _one_error_line(capsys.readouterr().err, flag.split("=")[0], problem)
    assert not out.exists()
    _assert_untouched(tmp_path, before)


def _make_synthetic():
    spec = importlib.util.spec_from_file_location("make_synthetic",
                                                  REPO / "datasets" / "make_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_synthetic_never_deletes_a_partial_folder_it_did_not_create(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = tmp_path / "D.partial"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("someone else's")
    monkeypatch.setattr(synthetic, "generate",
                        lambda out, size, seed: (Path(out) / "coco").mkdir())
    before = _checksums(tmp_path)
    _make_synthetic().main(["--out", str(tmp_path / "D"), "--size", "tiny"])
    _assert_untouched(tmp_path, before)
    assert (tmp_path / "D" / "coco").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D", "D.partial"]


# ----------------------------------------------------------------------------- case 6: signals
def _processes() -> dict[int, int]:
    """pid -> parent pid of every live, non-zombie process, from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            found[int(stat.parent.name)] = int(fields[1])
    return found


def _descendants(root: int) -> set[int]:
    procs, found, frontier = _processes(), set(), {root}
    while frontier:
        frontier = {pid for pid, parent in procs.items() if parent in frontier} - found
        found |= frontier
    return found


def _stage_trees(runner: int, count: int, nested: bool, timeout: float = 120.0) -> set[int]:
    """Every process under ``runner`` once ``count`` stages run (each with a child of its own
    when ``nested``) and have run a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = _processes()
        stages = [pid for pid, parent in procs.items() if parent == runner]
        if len(stages) >= count and (not nested or all(
                any(parent == stage for parent in procs.values()) for stage in stages)):
            time.sleep(1.0)  # mid-stage
            return _descendants(runner)
        time.sleep(0.2)
    raise AssertionError(f"{count} stage(s) of {runner} never started")


def _survivors(pids: set[int]) -> list[int]:
    deadline = time.monotonic() + 5
    while (alive := [pid for pid in _processes() if pid in pids]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def _kill(pids: set[int]) -> None:
    """Leave nothing behind even when the test fails."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_sigterm_to_the_suite_ends_its_stages_and_writes_no_more_rows(tiny_data: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "suite"
    argv = [sys.executable, "-m", "benchmarks.suite", "--out", str(out), "--panel", "simclr",
            "--pretrain-steps", "100000", "--tasks", "colorful_mnist_fixed", "--budget", "smoke",
            *[f"--data={name}={tiny_data / name}"
              for name in data_sets()]]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    stages: set[int] = set()
    try:
        stages = _stage_trees(proc.pid, 1, nested=False)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM
        assert "stopped by SIGTERM" in err and "Traceback" not in err
        assert not _survivors(stages)
        assert not (out / "leaderboard.csv").exists()
    finally:
        proc.kill()
        _kill(stages)


def test_sigint_ends_each_stage_process_group(tmp_path: Path) -> None:
    """Two stages whose processes have children, one of them deaf to SIGTERM (SIGKILL follows
    after the grace period, shortened here)."""
    code = ("import sys; from pathlib import Path; from benchmarks.runner import loop, stages\n"
            "loop.STOP_GRACE_SECONDS = 1.0\n"
            "tree = ['sh', '-c', 'sleep 300 & sleep 300']\n"
            "deaf = ['sh', '-c', 'trap \"\" TERM; sleep 300 & wait']\n"
            "planned = [stages.Stage('a', 't', tree), stages.Stage('b', 't', deaf)]\n"
            "try: loop.run(planned, Path(sys.argv[1]), 2)\n"
            "except loop.SuiteInterrupted as err: print(err); sys.exit(128 + err.signum)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stages: set[int] = set()
    try:
        stages = _stage_trees(proc.pid, 2, nested=True)
        proc.send_signal(signal.SIGINT)
        stdout, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGINT and "stopped by SIGINT" in stdout, err
        assert not _survivors(stages)
    finally:
        proc.kill()
        _kill(stages)


# ----------------------------------------------------------------------------- cases 7 and 10
def _csv_line(values: list[str]) -> bytes:
    return (",".join(values) + "\n").encode()


def test_bad_leaderboard_rows_are_named_skipped_and_never_copied_on(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "suite"
    board = out / "leaderboard.csv"
    leaderboard.write_rows(board, [_row("a", 20.0), _row("b", 30.0)])
    good = dict(zip(leaderboard.COLUMNS, next(csv.reader([board.read_text().splitlines()[1]]))))
    bad = [_csv_line([*good.values(), "extra"]),
           _csv_line([*{**good, "backbone_id": "c", "value": "twenty"}.values()]),
           _csv_line([*{**good, "backbone_id": "d"}.values()]).replace(b"simclr", b"simcl\xff"),
           _csv_line([*{**good, "backbone_id": "", "value": "1"}.values()])]
    board.write_bytes(board.read_bytes() + b"".join(bad))  # lines 4-7
    capsys.readouterr()

    assert leaderboard_cli.main(["show", "--csv", str(board)]) == 0
    shown = capsys.readouterr()
    for line in (4, 5, 6, 7):
        assert f"{board} line {line}:" in shown.err, shown.err
    assert "Traceback" not in shown.err and "[a]" in shown.out and "[b]" in shown.out
    suite.report(out, [])  # the suite's final report reads past them too
    assert "[a]" in (out / "report.md").read_text()

    leaderboard.write_rows(board, [_row("e", 40.0)])  # a writer: keeps the good, sets aside
    assert "moved to" in capsys.readouterr().err
    assert sorted(r["backbone_id"] for r in leaderboard.read_rows(board)[1]) == ["a", "b", "e"]
    assert (out / "leaderboard.csv.rejected").read_bytes() == b"".join(bad)


def test_checkpoint_metadata_is_escaped_in_csv_and_markdown(tmp_path: Path) -> None:
    meta = {"method": "=HYPERLINK(\"http://x\")|a\n| injected | row |", "regularizer": "+cmd",
            "arch": "@SUM(A1)", "data": "\tdata", "epochs": -1.5}
    weights = save_backbone(tmp_path / "b.safetensors", {"conv1.weight": torch.zeros(1)}, meta)
    board = tmp_path / "board.csv"
    fields = leaderboard.backbone_fields(weights, load_backbone(weights)[1])
    leaderboard.write_rows(board, [{**fields, "task": "colorful_mnist", "protocol": "linear",
                                    "metric": "=1+1", "value": -3.0}])
    with open(board, newline="") as f:
        row = list(csv.DictReader(f))[0]
    assert row["method"].startswith("'=") and row["regularizer"] == "'+cmd"
    assert row["arch"] == "'@SUM(A1)" and row["pretrain_data"] == "'\tdata"
    assert row["metric"] == "'=1+1"
    assert row["pretrain_epochs"] == "-1.5" and row["value"] == "-3"  # numbers stay numbers
    table = [line for line in tables.markdown(leaderboard.read_rows(board)[1]).splitlines()
             if line.startswith("|")]
    assert len(table) == 3  # header, separator, one row: no injected row
    assert "\\|" in table[2] and "| injected |" not in table[2]


# ----------------------------------------------------------------------------- case 9
def test_non_finite_weights_and_numbers_are_refused(tiny_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    nan_file = save_backbone(tmp_path / "nan.safetensors",
                             {"conv1.weight": torch.tensor([1.0, float("nan")])}, {})
    with pytest.raises(CheckpointError, match="'conv1.weight' holds 1 NaN or infinite"):
        load_backbone(nan_file)

    runs = tmp_path / "runs"
    tiny = [*_cli_flags(tiny_config(tiny_data, runs, "simclr")), "--steps", "1"]
    for flags in (["--lr", "nan"], ["--lr", "0"], ["--lr", "1e300"], ["--steps", "0"],
                  ["--batch-size", "0"], ["--weight-decay", "-1"], ["--momentum", "1"],
                  ["--epochs", "inf"], ["--image-size", "0"],
                  ["--method-arg", "temperature=.nan"]):
        assert train_module.main([*tiny, *flags]) == 2, flags  # the last value of a flag wins
        _one_error_line(capsys.readouterr().err, flags[0])
    assert not runs.exists()

    real_step = train_module.training_step

    def step_then_diverge(model, method, *args, **kwargs):
        result = real_step(model, method, *args, **kwargs)
        with torch.no_grad():
            next(method.backbone.parameters()).fill_(float("inf"))
        return result

    monkeypatch.setattr(train_module, "training_step", step_then_diverge)
    cfg = tiny_config(tiny_data, tmp_path, "simclr")
    assert train_module.main([*_cli_flags(cfg), "--steps", "1"]) == 3
    _one_error_line(capsys.readouterr().err, "holds", "nothing saved")
    assert not (tmp_path / "simclr" / "backbone.safetensors").exists()
    assert not (tmp_path / "simclr" / "last_state.pt").exists()


def test_git_lfs_pointer_is_named_not_blamed_as_code(tmp_path: Path) -> None:
    pointer = tmp_path / "r50.pth"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n")
    for load in (load_torch, load_pickle_arrays):
        with pytest.raises(CheckpointError, match="r50.pth: not a .*Git LFS pointer") as raised:
            load(pointer)
        assert "could run code" not in str(raised.value) and "\n" not in str(raised.value)


def test_malformed_metadata_and_config_files_are_one_line(tiny_data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import save_file

    for name, header in (("bad_json", "{not json"), ("not_object", "[1, 2]")):
        path = tmp_path / f"{name}.safetensors"
        save_file({"conv1.weight": torch.zeros(1)}, str(path), metadata={"suite_meta": header})
        with pytest.raises(CheckpointError, match=f"{name}.safetensors: its 'suite_meta'"):
            load_backbone(path)
    config = tmp_path / "latin1.yaml"
    config.write_bytes("method: simclr  # caf\xe9\n".encode("latin-1"))
    assert train_module.main(["--config", str(config)]) == 2
    _one_error_line(capsys.readouterr().err, "latin1.yaml", "not valid YAML")
    assert coco_det.main(["--weights", "random", "--config", str(config), "--data",
                          str(tiny_data / "coco"), "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys.readouterr().err, "latin1.yaml", "cannot be read as YAML")


# ----------------------------------------------------------------------------- disk full
def test_disk_full_is_one_line_and_exit_2_at_each_entry_point(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    board = tmp_path / "board.csv"
    leaderboard.write_rows(board, [_row("a", 20.0)])
    (tmp_path / "table.md").write_text(leaderboard_cli.MARKDOWN_MARK + "\nthe earlier table\n")
    before = _checksums(tmp_path)

    def no_space(*args) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)  # every atomic write fails
    cfg = tiny_config(tiny_data, tmp_path, "simclr")
    assert train_module.main([*_cli_flags(cfg), "--steps", "1"]) == 2
    _one_error_line(capsys.readouterr().err, "could not write", "No space left on device")
    assert leaderboard_cli.main(["markdown", "--csv", str(board),
                             "--out", str(tmp_path / "table.md")]) == 2
    _one_error_line(capsys.readouterr().err, "table.md", "No space left on device")

    def fills_up(out: Path, size: str, seed: int) -> None:
        (Path(out) / "coco").mkdir()
        no_space()

    monkeypatch.setattr(synthetic, "generate", fills_up)
    with pytest.raises(SystemExit) as exited:
        _make_synthetic().main(["--out", str(tmp_path / "data"), "--size", "tiny"])
    assert exited.value.code == 2
    _one_error_line(capsys.readouterr().err, "data", "No space left on device")
    _assert_untouched(tmp_path, before, outputs=("simclr/",))  # its log.txt
    assert not (tmp_path / "data").exists() and not list(tmp_path.glob(".data.partial-*"))
