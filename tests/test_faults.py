"""Faults across the suite: processes killed with SIGKILL (pretraining several times in one run, a
benchmark mid-run, a leaderboard writer mid-write) lose nothing and leave nothing torn."""
from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks.results.leaderboard import read_rows, write_rows
from pretrain.checkpoint import CheckpointError, load_torch

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parent.parent
STEPS = 14


def _pretrain_argv(tiny_data: Path, out: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "pretrain.train", "--method", "simclr", "--regularizer", "rcl",
            "--data", f"colorful_mnist={tiny_data / 'colorful_mnist'}", "--image-size", "16",
            "--batch-size", "8", "--steps", str(STEPS), "--save-every", "1", "--log-every", "1",
            "--method-arg", "proj_hidden_dim=32", "--method-arg", "proj_dim=16",
            "--device", "cpu", "--workers", "0", "--out", str(out / name)]


def _saved_step(run_dir: Path) -> int:
    try:
        return load_torch(run_dir / "last_state.pt")["step"]
    except CheckpointError:
        return 0


def _kill_at(argv: list[str], run_dir: Path, step: int) -> int:
    """Start (or resume) a run and SIGKILL it once its checkpoint reaches ``step``."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while proc.poll() is None and _saved_step(run_dir) < step and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read()!r}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    return _saved_step(run_dir)


@pytest.mark.slow
def test_pretraining_killed_three_times_ends_with_the_uninterrupted_parameters(
        tiny_data: Path, tmp_path: Path) -> None:
    subprocess.run(_pretrain_argv(tiny_data, tmp_path, "whole"), cwd=REPO, check=True,
                   capture_output=True, timeout=300)
    run_dir = tmp_path / "killed"
    kill_steps = sorted(random.Random(os.getpid()).sample(range(1, STEPS - 1), 3))
    reached = [_kill_at(_pretrain_argv(tiny_data, tmp_path, "killed"), run_dir, kill_steps[0])]
    for step in kill_steps[1:]:
        reached.append(_kill_at([sys.executable, "-m", "pretrain.train", "--resume",
                                 str(run_dir)], run_dir, max(step, reached[-1] + 1)))
    assert reached == sorted(reached) and reached[-1] < STEPS, reached
    subprocess.run([sys.executable, "-m", "pretrain.train", "--resume", str(run_dir)], cwd=REPO,
                   check=True, capture_output=True, timeout=300)

    whole = load_torch(tmp_path / "whole" / "last_state.pt")
    resumed = load_torch(run_dir / "last_state.pt")
    assert whole["step"] == resumed["step"] == STEPS
    for part in ("method", "regularizer"):
        assert whole[part].keys() == resumed[part].keys()
        for key, value in whole[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part}.{key} (killed at {reached})"
    assert whole["history"] == resumed["history"]


def _probe_argv(tiny_data: Path, weights: Path, out: Path, board: Path, cache: Path
                ) -> list[str]:
    return [sys.executable, str(REPO / "benchmarks" / "colorful_mnist.py"), "--weights",
            str(weights), "--data", str(tiny_data / "colorful_mnist"), "--protocol", "fixed",
            "--out", str(out), "--leaderboard", str(board), "--cache-dir", str(cache)]


@pytest.mark.slow
def test_benchmark_killed_mid_run_then_rerun_writes_its_rows_once(tiny_data: Path,
                                                                  tmp_path: Path) -> None:
    from pretrain.checkpoint import save_backbone
    from pretrain.open_backbone import open_backbone

    weights = tmp_path / "random.safetensors"
    control = open_backbone("random")
    save_backbone(weights, control.model.state_dict(), control.meta)
    board = tmp_path / "leaderboard.csv"
    def argv(cache: str) -> list[str]:
        return _probe_argv(tiny_data, weights, tmp_path / "probe", board, tmp_path / cache)

    # A first run that completes, then one killed once it has started probing: the board keeps
    # the first run's rows, whole; a rerun replaces them instead of adding a second set. The
    # killed run gets an empty feature cache, so that it is still extracting when the kill lands
    # (with the first run's cache it can finish within the delay).
    subprocess.run(argv("cache"), cwd=REPO, check=True, capture_output=True, timeout=300)
    first = read_rows(board)[1]
    proc = subprocess.Popen(argv("cold-cache"), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "colorful_mnist / fixed: backbone" in line:  # it has started the probe
            break
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.3))
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the benchmark ended before it could be killed"
    assert read_rows(board)[1] == first
    subprocess.run(argv("cache"), cwd=REPO, check=True, capture_output=True, timeout=300)
    again = read_rows(board)[1]
    key = [(r["task"], r["protocol"], r["metric"], r["seed"]) for r in again]
    assert len(key) == len(set(key)) == len(first)


# A writer appending rows in a loop. Its file writes go out in small, slow chunks, so that a kill
# lands mid-write most of the time (the window a real kill rarely hits, widened).
_WRITER = """
import io, sys, time
from benchmarks.results import leaderboard

real_atomic_write = leaderboard.atomic_write

def slow_atomic_write(path, write):
    payload = io.BytesIO()
    write(payload)
    data = payload.getvalue()

    def write_slowly(f):
        for i in range(0, len(data), 2048):
            f.write(data[i:i + 2048])
            f.flush()
            time.sleep(0.002)
    return real_atomic_write(path, write_slowly)

leaderboard.atomic_write = slow_atomic_write
board, writer = sys.argv[1], sys.argv[2]
for i in range(100000):
    leaderboard.write_rows(board, [{"backbone_id": writer, "method": "simclr",
                                    "regularizer": "none", "arch": "resnet18", "task": "t",
                                    "protocol": "linear", "metric": f"m{i % 500}", "value": i,
                                    "seed": 0, "source": "measured"}])
"""


def test_leaderboard_writers_killed_mid_write_leave_whole_rows(tmp_path: Path) -> None:
    board = tmp_path / "leaderboard.csv"
    for attempt in range(4):
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(board), f"w{k}"], cwd=REPO)
                 for k in range(2)]
        deadline = time.time() + 120
        while not board.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(random.Random(attempt).uniform(0.1, 1.0))  # then kill at a random moment
        for proc in procs:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        with open(board, newline="") as f:
            rows = list(csv.reader(f))
        assert rows, "the board was emptied"
        header = rows[0]
        assert all(len(row) == len(header) for row in rows), "a torn row"
        _, parsed = read_rows(board)
        keys = [(r["backbone_id"], r["metric"]) for r in parsed]
        assert len(keys) == len(set(keys)), "a duplicated row"
        assert all(float(r["value"]) >= 0 for r in parsed)
    killed_mid_write = list(tmp_path.glob(".leaderboard.csv.*.tmp"))
    write_rows(board, [{"backbone_id": "after", "task": "t", "protocol": "linear",
                        "metric": "m", "value": 1}])
    assert not list(tmp_path.glob(".leaderboard.csv.*.tmp")), killed_mid_write
