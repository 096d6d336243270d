"""The suite's one stage loop, and the local way to start a stage.

:func:`run` starts the stages that are not done (:func:`benchmarks.runner.markers.review`), up to
``jobs`` at once, each once the stage making its input has ended, through a *starter*: the local
one here (a process per stage, under :mod:`benchmarks.runner.guard`), or a submitit job
(:class:`benchmarks.runner.executor.JobStarter`). Both leave the same markers and logs, so a rerun
skips finished stages whichever started them.

Locally each stage runs in its own session (process group) under its guard, which ends the group
when the runner dies, SIGKILL included. SIGTERM or SIGINT to the runner ends every running
stage's whole group and raises :class:`SuiteInterrupted`; so does any error of the runner.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from benchmarks.runner import speed
from benchmarks.runner.markers import (
    STATE_FILE,
    Hashes,
    identity,
    merge_rows,
    prepare,
    review,
    write_marker,
)
from benchmarks.runner.stages import ROOT, Stage, after_of, log_path, tail
from pretrain.files import git_commit

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_GRACE_SECONDS = 10.0  # a stage's processes get this long to exit on SIGTERM, then SIGKILL
POLL_SECONDS = 0.2


class SuiteInterrupted(Exception):
    """SIGTERM or SIGINT reached the runner; its running stages have been ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class Starter(Protocol):
    """A way to start a stage: ``start`` returns a handle, ``result`` its (exit code, reason
    if it failed) once it has ended (None while it runs), ``marker_fields`` what its marker adds
    (a job id), ``stop`` ends the handles' stages."""

    def start(self, stage: Stage, argv: list[str], log: Path) -> Any: ...
    def result(self, handle: Any, log: Path) -> tuple[int, str | None] | None: ...
    def marker_fields(self, handle: Any) -> dict: ...
    def stop(self, handles: list[Any]) -> None: ...


@dataclass
class LocalStarter:
    """Each stage as a process of this machine, under its guard, in a session of its own."""

    jobs: int = 1

    def start(self, stage: Stage, argv: list[str], log: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.jobs > 1:  # one share of the cores each, unless the caller chose
            threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
            env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **env}
        guarded = [sys.executable, "-m", "benchmarks.runner.guard", str(os.getpid()), *argv]
        with open(log, "w") as f:
            return subprocess.Popen(guarded, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env=env, start_new_session=True)

    def result(self, handle: subprocess.Popen, log: Path) -> tuple[int, str | None] | None:
        if handle.poll() is None:
            return None
        code = handle.returncode
        return code, None if code == 0 else f"exit {code}: " + " | ".join(tail(log, 3))

    def marker_fields(self, handle: subprocess.Popen) -> dict:
        return {}

    def stop(self, handles: list[subprocess.Popen]) -> None:
        """SIGTERM each stage's process group, SIGKILL what is left after the grace period."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in handles:
                try:
                    os.killpg(proc.pid, sig)  # the stage's group: its pid (start_new_session)
                except (ProcessLookupError, PermissionError):
                    pass  # the whole group has already exited
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for proc in handles:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass


def run(stages: list[Stage], out: Path, jobs: int = 1, costs: list[float | None] | None = None,
        seconds_per_cost: float = 1.0, starter: Starter | None = None,
        code_change: str = "refuse", keep_state: bool = False) -> list[dict]:
    """Run the stages not yet done; return one record per stage, in order (status, seconds,
    log), after rebuilding ``<out>/leaderboard.csv`` from the done stages' rows. The progress
    line's ETA is :func:`benchmarks.runner.speed.expected_left` of the stages' ``costs``. A
    pretraining run's ``last_state.pt`` is removed once its backbone is written, unless
    ``keep_state``."""
    starter = starter or LocalStarter(jobs)
    stop: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        handlers = {sig: signal.signal(sig, lambda signum, _: stop.append(signum))
                    for sig in STOP_SIGNALS}
    running: dict[int, tuple[Any, float]] = {}
    try:
        records = _run(stages, out, jobs, starter, running, stop, costs or [None] * len(stages),
                       seconds_per_cost, code_change, keep_state)
    finally:
        starter.stop([handle for handle, _ in running.values()])
        for sig, handler in handlers.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    if stop:
        raise SuiteInterrupted(stop[0])
    merge_rows(out, stages, records)
    return records


def _run(stages: Sequence[Stage], out: Path, jobs: int, starter: Starter,
         running: dict[int, tuple[Any, float]], stop: list[int], costs: list[float | None],
         seconds_per_cost: float, code_change: str, keep_state: bool) -> list[dict]:
    code, hashes = git_commit(), Hashes()
    records, changed = review(stages, out, code, code_change, hashes)
    for i, why in changed.items():
        print(f"[suite] {stages[i].backbone}: {stages[i].name} reruns: {why}", flush=True)
    waiting = [i for i in range(len(stages)) if i not in records]
    after = after_of(stages)
    observed: dict[int, float] = {}  # seconds of the stages done in this run
    stage_identity: dict[int, dict] = {}
    started = time.monotonic()

    def finish(i: int, **result: object) -> None:
        records[i] = write_marker(out, stages[i], **result)

    while (waiting or running) and not stop:
        ready = [i for i in waiting if after[i] is None or after[i] in records]
        for i in ready[:max(0, jobs - len(running))]:
            waiting.remove(i)
            stage, now = stages[i], time.monotonic()
            left = speed.expected_left(costs, after, jobs, seconds_per_cost,
                                       done={j: observed.get(j) for j in records},
                                       running={j: now - t0 for j, (_, t0) in running.items()})
            eta = f"{left / 60:.1f} min" if left is not None else "?"
            print(f"[suite {len(records) + len(running) + 1}/{len(stages)} | "
                  f"{(now - started) / 60:.1f} min | ETA {eta}] "
                  f"{stage.backbone}: {stage.name}", flush=True)
            if stage.needs and not Path(stage.needs).exists():
                finish(i, status="skipped", seconds=0.0,
                       reason=f"{stage.needs} was not produced (an earlier stage failed)")
                continue
            now_identity = identity(stage, hashes, code)
            argv = prepare(out, stage, now_identity)
            log = log_path(out, stage)
            log.parent.mkdir(parents=True, exist_ok=True)
            running[i] = (starter.start(stage, argv, log), time.monotonic())
            stage_identity[i] = now_identity
        for i, (handle, t0) in list(running.items()):
            result = starter.result(handle, log_path(out, stages[i]))
            if result is None:
                continue
            del running[i]
            seconds, (exit_code, reason) = time.monotonic() - t0, result
            stage = stages[i]
            if exit_code == 0:
                observed[i] = seconds
                if stage.resumable and not keep_state and stage.folder:
                    (Path(stage.folder) / STATE_FILE).unlink(missing_ok=True)
            else:
                print(f"  {stage.backbone}: {stage.name} failed ({reason}); "
                      f"see {log_path(out, stage)}", flush=True)
            finish(i, status="done" if exit_code == 0 else "failed", seconds=round(seconds, 1),
                   identity=stage_identity[i], **({"reason": reason} if reason else {}),
                   **starter.marker_fields(handle))
        time.sleep(POLL_SECONDS)
    if stop:
        return []  # the caller ends the running stages and raises
    return [records[i] for i in range(len(stages))]
