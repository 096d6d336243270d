"""Where the suite's stages run, and what they would run: ``--dry-run``, ``--executor slurm|local``
and the architecture ``--budget full`` needs.

- ``--dry-run`` prints every stage of the plan (its command, GPUs, inputs and outputs, and whether
  a marker says it is done) and runs nothing.
- ``--executor slurm`` submits each stage as one job through submitit (the job library of
  detectron2's and DINO's Slurm launchers): one node, one task, the stage's GPUs
  (``gpus_per_node``; the stage's own launcher, torchrun or detectron2's ``launch``, starts one
  process per GPU), ``--cpus-per-gpu`` cores per GPU and ``--job-minutes``. Stages follow the
  same graph as the local runner (a task starts once the pretraining making its backbone has
  ended) and leave the same markers in ``<out>/state/`` and logs in ``<out>/logs/``, so a rerun
  skips finished stages, whichever executor ran them. ``--executor local`` (the default) is the
  suite's own process runner; ``submitit-local`` runs the jobs through submitit's
  ``LocalExecutor`` (how the cluster path is tested on a CPU).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import time
from pathlib import Path

from benchmarks.runner.stages import ROOT, Stage, after_of, done_records, finish, log_path, tail

EXECUTORS = ("local", "slurm", "submitit-local")
POLL_SECONDS = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's flags for where stages run (``benchmarks/runner/suite.py`` adds them)."""
    parser.add_argument("--dry-run", action="store_true",
                        help="print every stage's command, GPUs and inputs; run nothing")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: processes on this machine; slurm: one Slurm job per stage "
                             "(submitit); submitit-local: submitit's local executor (tests)")
    parser.add_argument("--partition", default=None, help="Slurm partition (--executor slurm)")
    parser.add_argument("--job-minutes", type=int, default=24 * 60,
                        help="time limit of each Slurm job in minutes (default one day)")
    parser.add_argument("--cpus-per-gpu", type=int, default=10,
                        help="CPU cores a Slurm job asks for per GPU (data loading)")


def full_budget_problem(budget: str, arch: str, tasks: list[str]) -> str | None:
    """Why ``--budget full`` cannot run these tasks with ``arch`` (their published protocols
    need another), or None."""
    from benchmarks.runner.tasks import suite_stages  # here: a job imports this module, not torch

    if budget != "full":
        return None
    stages = suite_stages()
    wrong = sorted({f"{task.name} ({task.full_arch})" for name, (task, _) in stages.items()
                    if name in tasks and task.full_arch and task.full_arch != arch})
    if not wrong:
        return None
    return (f"--budget full runs the published protocols, and {', '.join(wrong)} need that "
            f"arch, not --arch {arch}: pass --arch resnet50, or leave those out with --tasks")


# ------------------------------------------------------------------------------------ dry run
def describe(stages: list[Stage], out: Path, done: set[int]) -> str:
    """The plan in words: per stage its command, GPUs, inputs and outputs."""
    after = after_of(stages)
    lines = [f"[suite] dry run: {len(stages)} stages, {len(done)} already done (markers in "
             f"{out / 'state'}); nothing is run"]
    for i, stage in enumerate(stages):
        inputs = [_flag_value(stage.argv, flag) for flag in ("--data", "--weights")]
        needs = f" (made by stage {after[i] + 1})" if after[i] is not None else ""
        lines += [f"{i + 1:3d}. {stage.backbone}: {stage.name}"
                  f"{' [done]' if i in done else ''}",
                  f"     gpus {stage.gpus}; inputs: data {inputs[0] or '-'}, weights "
                  f"{inputs[1] or '-'}{needs}"
                  + (f"; outputs: {', '.join(stage.outputs)}" if stage.outputs else ""),
                  f"     $ {shlex.join(stage.argv)}"]
    return "\n".join(lines)


def _flag_value(argv: list[str], flag: str) -> str | None:
    values = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]
    return ", ".join(values) if values else None


# ------------------------------------------------------------------------------------ jobs
def run_stage(argv: list[str], log: str, cwd: str) -> int:
    """One stage, inside a job: its command with stdout and stderr in its log; the exit code."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as f:
        return subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env).returncode


def make_executor(kind: str, folder: Path, partition: str | None = None,
                  minutes: int = 24 * 60) -> object:
    """A submitit executor: Slurm, or the local one."""
    import submitit

    if kind == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(timeout_min=minutes, nodes=1, tasks_per_node=1,
                                   **({"slurm_partition": partition} if partition else {}))
        return executor
    return submitit.LocalExecutor(folder=folder)


def run_jobs(stages: list[Stage], out: Path, executor: object, cpus_per_gpu: int = 10,
             use_gpus: bool = True) -> list[dict]:
    """Submit the stages not yet done as jobs, each once the stage making its input has ended;
    wait for all; write each stage's marker (:mod:`benchmarks.runner.stages`). Returns one record
    per stage, in order, as the local runner does."""
    records = done_records(stages, out)
    waiting = [i for i in range(len(stages)) if i not in records]
    after = after_of(stages)
    running: dict[int, tuple[object, float]] = {}
    while waiting or running:
        for i in [i for i in waiting if after[i] is None or after[i] in records]:
            waiting.remove(i)
            stage = stages[i]
            if stage.needs and not Path(stage.needs).exists():
                finish(out, stage, records, i, status="skipped", seconds=0.0,
                        reason=f"{stage.needs} was not produced (an earlier stage failed)")
                continue
            gpus = stage.gpus if use_gpus else 0
            executor.update_parameters(gpus_per_node=gpus, cpus_per_task=max(1, gpus)
                                       * cpus_per_gpu, name=f"{stage.backbone}-{stage.name}")
            log = log_path(out, stage)
            log.parent.mkdir(parents=True, exist_ok=True)
            job = executor.submit(run_stage, stage.argv, str(log), str(ROOT))
            print(f"[suite] {stage.backbone}: {stage.name} submitted as job {job.job_id}",
                  flush=True)
            running[i] = (job, time.monotonic())
        for i, (job, t0) in list(running.items()):
            if not job.done():
                continue
            del running[i]
            try:
                code = job.result()
            except Exception as err:  # the job itself failed (cancelled, timed out, node lost)
                code, reason = -1, f"job {job.job_id}: {' '.join(str(err).split())[:300]}"
            else:
                reason = f"exit {code}: " + " | ".join(tail(log_path(out, stages[i]), 3))
            extra = {"reason": reason} if code != 0 else {}
            finish(out, stages[i], records, i, seconds=round(time.monotonic() - t0, 1),
                    status="done" if code == 0 else "failed", job=str(job.job_id), **extra)
        time.sleep(POLL_SECONDS)
    return [records[i] for i in range(len(stages))]


def main_branch(args: argparse.Namespace, stages: list[Stage], out: Path) -> list[dict] | None:
    """The submitit executors' records; None for the local runner."""
    if args.executor == "local":
        return None
    executor = make_executor(args.executor, out / "jobs", args.partition, args.job_minutes)
    return run_jobs(stages, out, executor, args.cpus_per_gpu,
                    use_gpus=args.executor == "slurm")
