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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.runner.loop import run
from benchmarks.runner.stages import ROOT, Stage, after_of, tail

EXECUTORS = ("local", "slurm", "submitit-local")


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
def describe(stages: list[Stage], out: Path, done: set[int],
             changed: dict[int, str] | None = None) -> str:
    """The plan in words: per stage its command, GPUs, inputs (a pretraining's data included)
    and outputs, and whether it is done or reruns (and why)."""
    changed = changed or {}
    after = after_of(stages)
    lines = [f"[suite] dry run: {len(stages)} stages, {len(done)} already done (markers in "
             f"{out / 'state'}); nothing is run"]
    for i, stage in enumerate(stages):
        inputs = [_flag_value(stage.argv, flag) for flag in ("--data", "--weights")]
        needs = f" (made by stage {after[i] + 1})" if after[i] is not None else ""
        lines += [f"{i + 1:3d}. {stage.backbone}: {stage.name}"
                  f"{' [done]' if i in done else ''}"
                  f"{f' [reruns: {changed[i]}]' if i in changed else ''}",
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


@dataclass
class JobStarter:
    """Each stage as one submitit job (:func:`make_executor`): one node, one task, the stage's
    GPUs (none when ``use_gpus`` is false) and ``cpus_per_gpu`` cores per GPU."""

    executor: Any
    cpus_per_gpu: int = 10
    use_gpus: bool = True

    def start(self, stage: Stage, argv: list[str], log: Path) -> Any:
        gpus = stage.gpus if self.use_gpus else 0
        self.executor.update_parameters(gpus_per_node=gpus, cpus_per_task=max(1, gpus)
                                        * self.cpus_per_gpu, name=f"{stage.backbone}-{stage.name}")
        job = self.executor.submit(run_stage, argv, str(log), str(ROOT))
        print(f"[suite] {stage.backbone}: {stage.name} submitted as job {job.job_id}", flush=True)
        return job

    def result(self, job: Any, log: Path) -> tuple[int, str | None] | None:
        if not job.done():
            return None
        try:
            code = job.result()
        except Exception as err:  # the job itself failed (cancelled, timed out, node lost)
            return -1, f"job {job.job_id}: {' '.join(str(err).split())[:300]}"
        return code, None if code == 0 else f"exit {code}: " + " | ".join(tail(log, 3))

    def marker_fields(self, job: Any) -> dict:
        return {"job": str(job.job_id)}

    def stop(self, jobs: list[Any]) -> None:
        for job in jobs:
            job.cancel(check=False)


def run_jobs(stages: list[Stage], out: Path, executor: Any, cpus_per_gpu: int = 10,
             use_gpus: bool = True, code_change: str = "refuse",
             keep_state: bool = False) -> list[dict]:
    """The stages not yet done as jobs, through the suite's one stage loop
    (:func:`benchmarks.runner.loop.run`: the same graph, markers and logs as the local runner);
    one record per stage, in order."""
    return run(stages, out, jobs=max(1, len(stages)),
               starter=JobStarter(executor, cpus_per_gpu, use_gpus), code_change=code_change,
               keep_state=keep_state)
