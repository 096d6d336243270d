"""Honest reruns (benchmarks/runner/markers.py): a stage's marker records its command, its input
checkpoints' hashes and the code version; a rerun skips a stage only when all three are the same,
reruns it (replacing its rows) when its command or input changed, refuses when only the code
changed, and continues a killed pretraining with --resume. A killed runner leaves no stage."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_hostile import _descendants

from benchmarks.results.leaderboard import read_rows
from benchmarks.runner import loop, markers
from benchmarks.runner.stages import Stage
from benchmarks.runner.tasks import data_sets

REPO = Path(__file__).resolve().parent.parent
SETS = data_sets()  # every set given: none falls back to the embedded default


def _writes_row(folder: Path, budget: str, value: float, needs: Path | None = None) -> Stage:
    """A stage that writes one leaderboard row to its folder's board, as the probes do."""
    code = ("import sys; from benchmarks.results.leaderboard import write_rows; "
            f"write_rows({str(folder / 'leaderboard.csv')!r}, [dict(backbone_id='b', task='t', "
            f"protocol='linear', metric='top1', value={value}, budget={budget!r})])")
    return Stage("b", "t", [sys.executable, "-c", code, budget], folder=str(folder),
                 needs=str(needs) if needs else None)


def test_a_changed_command_reruns_and_replaces_its_rows(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    folder = out / "t" / "b"
    first = loop.run([_writes_row(folder, "smoke", 1.0)], out)
    assert first[0]["status"] == "done"
    assert [(r["budget"], r["value"]) for r in read_rows(out / "leaderboard.csv")[1]] == [
        ("smoke", "1")]
    again = loop.run([_writes_row(folder, "smoke", 1.0)], out)
    assert again == first  # the same stage: skipped
    changed = loop.run([_writes_row(folder, "cpu", 2.0)], out)  # its command differs
    assert changed[0]["seconds"] != first[0]["seconds"] or changed != first
    rows = read_rows(out / "leaderboard.csv")[1]
    assert [(r["budget"], r["value"]) for r in rows] == [("cpu", "2")]  # no stale smoke row
    marker = json.loads((out / "state" / "b__t.json").read_text())
    assert marker["identity"]["command"][-1] == "cpu" and marker["identity"]["code"]


def test_a_changed_input_checkpoint_reruns_its_readers(tmp_path: Path) -> None:
    out, weights = tmp_path / "suite", tmp_path / "given.pth"
    weights.write_bytes(b"one")
    stage = _writes_row(out / "t" / "b", "cpu", 1.0, needs=weights)
    first = loop.run([stage], out)
    assert first[0]["identity"]["inputs"] == {str(weights): markers.file_sha256(weights)}
    weights.write_bytes(b"two")
    done, changed = markers.review([stage], out, first[0]["identity"]["code"])
    assert not done and changed == {0: "its input checkpoint changed"}


def test_a_new_code_version_is_refused_in_one_line_or_rerun_on_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "suite"
    stage = _writes_row(out / "t" / "b", "cpu", 1.0)
    loop.run([stage], out)
    monkeypatch.setattr(loop, "git_commit", lambda: "0123456789ab")
    with pytest.raises(markers.MarkerError, match="made by code .*, this is 0123456789ab; pass "
                                                   "--code-change rerun"):
        loop.run([stage], out)
    again = loop.run([stage], out, code_change="rerun")
    assert again[0]["identity"]["code"] == "0123456789ab"


def test_a_tampered_marker_is_one_line(tmp_path: Path, tiny_data: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    from benchmarks.runner.suite import main

    out = tmp_path / "suite"
    (out / "state").mkdir(parents=True)
    (out / "state" / "speed.json").write_text("{}")
    (out / "state" / "random-init__colorful_mnist_fixed.json").write_text('{"status": "don')
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(out), "--panel", "", "--tasks", "colorful_mnist_fixed", "--dry-run",
              *[f"--data={name}={tiny_data / name}" for name in SETS]])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "not a stage marker the suite wrote" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_suite_claims_its_out(tmp_path: Path, tiny_data: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    from benchmarks.runner.suite import main

    flags = ["--panel", "", "--tasks", "colorful_mnist_fixed", "--budget", "smoke",
             *[f"--data={name}={tiny_data / name}" for name in SETS]]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes")
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(mine), *flags])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "holds report.md" in err and len(err.splitlines()) == 1
    assert (mine / "report.md").read_text() == "my own notes"
    for unwritable in (tmp_path / "a_file" / "suite", tmp_path / ("x" * 300)):
        (tmp_path / "a_file").write_text("")
        with pytest.raises(SystemExit) as exit_:
            main(["--out", str(unwritable), *flags])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err


def test_flags_that_would_fail_later_fail_at_once(tmp_path: Path, tiny_data: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from benchmarks.runner.suite import main

    data = [f"--data={name}={tiny_data / name}" for name in SETS]
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "s"), "--panel", "simclr,simclr+nope", "--dry-run", *data])
    assert exit_.value.code == 2 and "--panel simclr+nope: unknown" in capsys.readouterr().err
    # --budget full on the embedded synthetic pretraining data: refused, naming the flags
    full = ["--out", str(tmp_path / "s"), "--budget", "full", "--panel", "simclr", "--tasks",
            "colorful_mnist_fixed", "--dry-run"]
    with pytest.raises(SystemExit) as exit_:
        main([*full, *data[:3]])  # the tasks' sets given; pretraining's is the embedded one
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--data imagefolder=ROOT" in err and "--checkpoint" in err
    assert "embedded synthetic colorful_mnist" in err
    # real pretraining data (here the tiny set stands in for a real one): the dry run shows it
    assert main([*full, *data]) == 0
    printed = capsys.readouterr().out
    assert f"data colorful_mnist={tiny_data / 'colorful_mnist'}" in printed
    assert "V100-hours (pretraining" in printed and "from published training times" in printed
    assert "no published time, not counted: colorful_mnist_fixed x2" in printed


def _alive(pids: set[int]) -> set[int]:
    deadline = time.monotonic() + 15
    while (alive := pids & _descendants(1) - {1}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


@pytest.mark.slow
def test_a_killed_suite_leaves_no_stage_and_its_rerun_resumes_the_pretraining(
        tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "suite"
    argv = ["--out", str(out), "--panel", "simclr", "--tasks", "colorful_mnist_fixed",
            "--budget", "smoke", "--pretrain-steps", "16", "--pretrain-save-every", "2",
            *[f"--data={name}={tiny_data / name}" for name in SETS]]
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.suite", *argv], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "pretrain" / "simclr" / markers.STATE_FILE
    stages: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while not state.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert state.exists(), "the pretraining never saved its state"
        stages = _descendants(proc.pid)
        assert stages, "no stage process"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert not _alive(stages)  # every stage process died with the runner
    finally:
        proc.kill()
        for pid in _alive(stages):
            subprocess.run(["kill", "-9", str(pid)], check=False)
    marker = json.loads((out / "state" / "simclr__pretrain.json").read_text())
    assert marker["status"] == "running"

    from benchmarks.runner.suite import main

    assert main(argv) == 0  # the same command: it completes, from the saved state
    log = (out / "logs" / "simclr" / "pretrain.log").read_text()
    assert f"resumed {out / 'pretrain' / 'simclr'} at step" in log
    assert not state.exists()  # removed once the backbone is written (no --keep-state)
    assert json.loads((out / "state" / "simclr__pretrain.json").read_text())["status"] == "done"

    # the measured bug: a rerun with another pretraining length printed "0 stages to run" and
    # kept the old rows; now the pretraining reruns and so does every stage reading its backbone
    # (that a rerun stage replaces its rows: test_a_changed_command_reruns_and_replaces_its_rows)
    capsys.readouterr()
    assert main([*argv, "--pretrain-steps", "4", "--dry-run"]) == 0  # the last one wins
    plan = capsys.readouterr().out
    assert "1. simclr: pretrain [reruns: its command changed (now 4; was 16)]" in plan, plan
    assert "simclr: colorful_mnist_fixed [reruns: its input is being remade]" in plan
    assert "random-init: colorful_mnist_fixed [done]" in plan
