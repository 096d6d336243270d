"""The suite runner on the tiny set: a 2-backbone panel plus a broken checkpoint; failures are
reported without losing the other results, and a rerun skips what is done."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.leaderboard import read_rows
from benchmarks.suite import main


@pytest.mark.slow
def test_runner_reports_failures_keeps_results_and_resumes(tiny_data: Path,
                                                           tmp_path: Path) -> None:
    garbage = tmp_path / "downloaded.pth"
    garbage.write_bytes(b"not a checkpoint")
    out = tmp_path / "suite"
    argv = ["--out", str(out), "--panel", "simclr", "--checkpoint", f"broken={garbage}",
            "--tasks", "colorful_mnist_fixed", "--budget", "smoke",
            *[f"--data={name}={tiny_data / name}"
              for name in ("coco", "mpii", "fairface", "colorful_mnist")]]
    assert main(argv) == 1  # the broken checkpoint's stage failed

    report = (out / "report.md").read_text()
    assert "| broken | colorful_mnist_fixed | failed |" in report
    assert (out / "panel.png").is_file()
    _, rows = read_rows(out / "leaderboard.csv")
    methods = {r["method"] for r in rows if r["task"] == "colorful_mnist"}
    assert methods == {"simclr", "random-init"}
    assert "RCL Table 4" in report  # published numbers beside the measured ones

    done_log = out / "logs" / "simclr" / "pretrain.log"
    stamp = done_log.stat().st_mtime_ns
    assert main(argv) == 1
    assert done_log.stat().st_mtime_ns == stamp  # finished stages are skipped on a rerun
    assert len(read_rows(out / "leaderboard.csv")[1]) == len(rows)


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--tasks", "coco_det,mnist"])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--checkpoint", f"x={tmp_path / 'absent.pth'}"])
