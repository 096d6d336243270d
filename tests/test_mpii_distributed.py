"""transfer/mpii_pose.py on two processes (``--gpus 2``: torchrun, mmengine's pytorch launcher,
gloo on CPUs) end to end on the tiny synthetic MPII set; the learning rate follows the total
batch (mmpose's auto_scale_lr); then ``--eval-only`` scores the saved checkpoint again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transfer import mpii_pose
from transfer.mpii_config import CPU_CONFIG

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_processes_then_eval_only(tiny_data: Path, tmp_path: Path) -> None:
    out, board = tmp_path / "run", tmp_path / "board.csv"
    common = ["--data", str(tiny_data / "mpii"), "--config", str(CPU_CONFIG),
              "--out", str(out), "--val-images", "8", "--leaderboard", str(board)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "transfer.mpii_pose", "--gpus", "2",
         "--weights", "random", "--arch", "resnet18", "--max-iters", "2", "--batch-size", "4",
         *common], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["batch_size"] == 8
    assert record["lr"] == pytest.approx(5e-4 * 8 / 512)  # auto_scale_lr, base batch 512
    assert record["best"]["iteration"] == 2 and "PCKh@0.5" in record["best"]["metrics"]
    assert done.stdout.count('"world_size"') == 1  # one summary, from rank 0

    (out / "metrics.json").unlink()
    assert mpii_pose.main(["--eval-only", *common]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["eval_only"] and again["metrics"] == record["metrics"]
    assert again["checkpoint"].endswith("iter_2.pth")


def test_torchrun_command_keeps_every_flag_but_gpus() -> None:
    command = mpii_pose.torchrun_command(["--gpus", "8", "--weights", "w.pth", "--gpus=8",
                                          "--max-iters", "3"], 8)
    assert command[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "8"]
    assert command[-8:] == ["-m", "transfer.mpii_pose", "--weights", "w.pth", "--max-iters", "3",
                            "--launcher", "pytorch"]
    assert "--gpus" not in " ".join(command)
