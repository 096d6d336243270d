"""transfer/coco_det.py on two processes (gloo on CPUs: transfer/detectron2_launch.py's
launch_cpu), end to end on the tiny synthetic COCO set: the command a user types."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_process_run_trains_evaluates_and_scores(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "transfer.coco_det", "--gpus", "2",
         "--weights", "random", "--arch", "resnet18", "--data", str(tiny_data / "coco"),
         "--config-file", str(REPO / "transfer" / "configs" / "coco_cpu_FPN_128px.yaml"),
         "--out", str(out), "--val-images", "4", "--leaderboard", str(tmp_path / "board.csv"),
         "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "4", "SOLVER.WARMUP_ITERS", "1",
         "SOLVER.STEPS", "()", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (out / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 2" in log
    assert "Starting training from iteration 0" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"bbox", "segm"} and metrics["iterations"] == 2
    assert (tmp_path / "board.csv").is_file()
