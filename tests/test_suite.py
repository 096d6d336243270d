"""The suite runner on the tiny set: a 2-backbone panel plus a broken checkpoint; failures are
reported without losing the other results, and a rerun skips what is done."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks.results.leaderboard import read_rows
from benchmarks.runner.suite import main
from benchmarks.runner.tasks import data_sets


@pytest.mark.slow
def test_runner_reports_failures_keeps_results_and_resumes(tiny_data: Path,
                                                           tmp_path: Path) -> None:
    garbage = tmp_path / "downloaded.pth"
    garbage.write_bytes(b"not a checkpoint")
    out = tmp_path / "suite"
    argv = ["--out", str(out), "--panel", "simclr,simclr+rcl", "--checkpoint", f"broken={garbage}",
            "--tasks", "colorful_mnist_fixed", "--budget", "smoke",
            *[f"--data={name}={tiny_data / name}"
              for name in data_sets()]]
    assert main(argv) == 1  # the broken checkpoint's stage failed

    report = (out / "report.md").read_text()
    assert "| broken | colorful_mnist_fixed | failed |" in report
    assert (out / "shortcut_colorful_mnist.png").is_file()
    _, rows = read_rows(out / "leaderboard.csv")
    methods = {r["method"] for r in rows if r["task"] == "colorful_mnist"}
    assert methods == {"simclr", "random-init"}
    assert {r["regularizer"] for r in rows if r["method"] == "simclr"} == {"none", "rcl"}
    # RCL is published on MoCo v2 only: simclr+rcl is a pair no paper tests, with its interval
    claims = report[report.index("## The papers' claims"):].splitlines()
    assert any(line.startswith("| simclr+rcl vs simclr | colorful_mnist | linear | digit_top1 | ")
               and "paired bootstrap" in line for line in claims)

    done_log = out / "logs" / "simclr" / "pretrain.log"
    stamp = done_log.stat().st_mtime_ns
    assert main(argv) == 1
    assert done_log.stat().st_mtime_ns == stamp  # finished stages are skipped on a rerun
    assert len(read_rows(out / "leaderboard.csv")[1]) == len(rows)


def test_bad_arguments_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Each bad argument ends the suite before any stage: exit 2 and one line naming it."""
    for argv, named in ((["--tasks", "coco_det,mnist"], "unknown ['mnist']"),
                        (["--checkpoint", f"x={tmp_path / 'absent.pth'}"], "absent.pth")):
        with pytest.raises(SystemExit) as exited:
            main(["--out", str(tmp_path / "out"), *argv])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and named in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_parallel_stages_wait_for_their_inputs_and_skip_after_a_failure(tmp_path: Path) -> None:
    from benchmarks.runner.loop import run
    from benchmarks.runner.stages import Stage

    def script(code: str) -> list[str]:
        return [sys.executable, "-c", f"import pathlib, sys, time; {code}"]

    made, never = tmp_path / "made.bin", tmp_path / "never.bin"
    runs = tmp_path / "runs.txt"
    count = f"open({str(runs)!r}, 'a').write('x')"
    stages = [
        Stage("a", "pretrain", script(f"{count}; time.sleep(1); "
                                      f"pathlib.Path({str(made)!r}).write_text('w')"),
              outputs=[str(made)]),
        Stage("b", "pretrain", script(f"{count}; sys.exit(3)"), outputs=[str(never)]),
        Stage("a", "task", script(f"{count}; assert pathlib.Path({str(made)!r}).exists()"),
              needs=str(made)),
        Stage("b", "task", script(count), needs=str(never)),
    ]
    out = tmp_path / "suite"
    records = run(stages, out, jobs=2)
    assert [r["status"] for r in records] == ["done", "failed", "done", "skipped"]
    assert "exit 3" in records[1]["reason"] and "never.bin" in records[3]["reason"]
    assert runs.read_text() == "xxx"
    records = run(stages, out, jobs=2)  # a rerun: only what did not finish runs again
    assert [r["status"] for r in records] == ["done", "failed", "done", "skipped"]
    assert runs.read_text() == "xxxx"
