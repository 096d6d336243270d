"""The suite runner: from nothing to a leaderboard, report and plot, in one output folder.

    python -m benchmarks.suite [--out runs/suite] [--size default|tiny]
        [--panel simclr,simclr+rcl,...] [--checkpoint NAME=PATH ...] [--data SET=ROOT ...]
        [--arch resnet18] [--gpus N] [--jobs N] [--budget cpu|smoke|full]

With no arguments (the README's main job) it generates the embedded synthetic default, pretrains a
panel of ResNet-18 backbones on it plus the random-init control (``--weights random``, the same in
every stage), and runs every task of the table in ``benchmarks/runner/tasks.py`` on each: COCO
Mask R-CNN (detectron2), MPII pose fixed and fine-tuned (mmpose), FairFace and Colorful-MNIST fixed
and fine-tuned, and COCO foreground/background. Below ``--budget full`` a stage that only proves
its path works (a few engine iterations, a fraction of a fine-tuning epoch: the table's
``path_checks``) runs on one backbone, the panel's first; every other stage runs on every
backbone. Every stage runs as its own process (the same command a user would type, ``python -m
MODULE``), so a stage that fails for one backbone is recorded in the report and the others go
on; on a CPU two stages run at once. ``--out`` is the suite's own folder
(claimed as every command claims its output: a folder of another command is refused).

Reruns are honest. Each stage's marker in ``<out>/state/`` records what produced it: its command
line, the sha256 of its input checkpoints and the code version (git commit). Rerunning skips a
stage only when all three are the same and its outputs exist. A stage whose command changed (any
flag: --budget, --pretrain-steps, --seeds, --data, ...) or whose input checkpoint changed reruns
from scratch, replacing its rows (``<out>/leaderboard.csv`` is rebuilt from the done stages'
rows); a stage that never finished reruns, a pretraining continuing its run with ``--resume``.
A stage that differs only by the code version is refused in one line before anything runs, unless
``--code-change rerun``. Once a pretraining has written its backbone its ``last_state.pt`` (what
--resume reads) is removed, unless ``--keep-state``.

SIGTERM or SIGINT (Ctrl-C) to the runner ends every running stage with all its processes (each
stage runs in its own process group) and exits with 128 + the signal's number; if the runner is
killed outright (SIGKILL), each stage's guard ends its stage. Rerunning the same command
continues.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from types import MappingProxyType

from benchmarks.results import leaderboard
from benchmarks.results import report as suite_report
from benchmarks.runner import executor, gpu_hours, speed
from benchmarks.runner.loop import SuiteInterrupted, run
from benchmarks.runner.markers import review
from benchmarks.runner.plan import (
    DEFAULT_PANEL,
    DEFAULT_SEEDED,
    DEFAULT_SEEDS,
    PRETRAIN_BUDGETS,
    PRETRAIN_ONLY,
    SEED_TASKS,
    PlanConfig,
    checkpoint_archs,
    plan,
    pretrain_source,
)
from benchmarks.runner.tasks import TASKS, data_sets, suite_stages
from pretrain.backbones import ARCHS
from pretrain.cli import InputError, claim_output, number, one_line, one_line_errors
from pretrain.data import LAYOUTS, DataError
from pretrain.files import git_commit
from pretrain.open_backbone import RANDOM_METHOD


def report(out: Path, records: list[dict]) -> Path:
    """report.md and its pictures (benchmarks/results/report.py)."""
    return suite_report.write(out, records)


# A backbone name becomes a folder name (<out>/<task>/<name>, logs, stage markers): one path
# component, no separator, not hidden, no '..'.
BACKBONE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


class BadArgument(InputError):
    """A command-line value the runner refuses; the message names the flag."""


def _pairs(values: list[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise BadArgument(f"{flag} expects NAME=PATH, got {value!r}")
        if name in dict(pairs):
            raise BadArgument(f"{flag} {name} is given twice")
        pairs.append((name, path))
    return pairs


def check_sources(checkpoints: list[str], data: list[str], panel: list[str]
                  ) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """``--checkpoint NAME=PATH`` and ``--data SET=ROOT``, checked before any becomes a path:
    a NAME is a plain folder name, distinct from the panel's backbones, PATH a file; a SET is
    known and ROOT a folder its layout's reader accepts."""
    named = _pairs(checkpoints, "--checkpoint")
    taken = {*panel, RANDOM_METHOD}
    for name, path in named:
        if not BACKBONE_NAME.fullmatch(name) or ".." in name:
            raise BadArgument(f"--checkpoint {name}={path}: NAME becomes a folder name, so it "
                              "must be 1-64 letters, digits and _ . + - starting with a letter or "
                              "digit (no '/', no '..')")
        if name in taken:
            raise BadArgument(f"--checkpoint {name}={path}: NAME clashes with the panel's "
                              f"backbone {name!r}; choose another name")
        if not Path(path).is_file():
            raise BadArgument(f"--checkpoint {name}={path}: no such file")
    roots = dict(_pairs(data, "--data"))
    readers = {task.data: task.reader for task in TASKS.values()}
    readers[PRETRAIN_ONLY] = LAYOUTS[PRETRAIN_ONLY].check
    for key, root in roots.items():
        if key not in readers:
            raise BadArgument(f"--data {key}={root}: unknown set {key!r}; use "
                              f"{', '.join(readers)}")
        if not Path(root).is_dir():
            raise BadArgument(f"--data {key}={root}: no such folder")
    for key, root in roots.items():  # the layout's reader: a bad root fails once, before any stage
        try:
            readers[key](Path(root))
        except DataError as err:
            raise BadArgument(f"--data {key}={root}: {err}") from err
    return named, roots


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    one_line_errors(parser)  # a bad flag is one line, exit 2
    parser.add_argument("--out", default="runs/suite",
                        help="the suite's run folder (default runs/suite)")
    parser.add_argument("--size", default="default", choices=["default", "tiny"],
                        help="embedded synthetic data size, for sets without --data")
    parser.add_argument("--panel", default=",".join(DEFAULT_PANEL),
                        help="comma-separated METHOD[+REGULARIZER] backbones to pretrain "
                             "('' for none); a random-init control is always added")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="a backbone trained elsewhere (any format pretrain/foreign.py reads)")
    parser.add_argument("--data", action="append", default=[], metavar="SET=ROOT",
                        help=f"real data root for {', '.join(data_sets())}, or imagefolder=ROOT "
                             "(root/<class>/<image>): the pretraining data")
    parser.add_argument("--arch", default="resnet18", choices=ARCHS)
    parser.add_argument("--gpus", type=number(), default=1,
                        help="GPUs per stage (detectron2 launch)")
    parser.add_argument("--jobs", type=number(), default=None,
                        help="stages run at once, each on its share of the CPU cores "
                             "(default: 2 on a CPU-only machine, where it is about 1.5x faster "
                             "than one stage on both cores; 1 with a GPU)")
    parser.add_argument("--budget", default="cpu", choices=sorted(PRETRAIN_BUDGETS),
                        help="cpu: sized for a 2-core CPU; smoke: a few steps each (tests); "
                             "full: the engines' own protocols, on real pretraining data")
    parser.add_argument("--seeds", type=number(), default=None,
                        help="pretrain each backbone of --seeded with seeds 0..N-1 and run its "
                             "stages with its seed (probe seed and random init), for intervals "
                             "over seeds in the report (default: 1; with the default panel, "
                             f"{DEFAULT_SEEDS} for {','.join(DEFAULT_SEEDED)}: the claim the "
                             "main job judges over seeds)")
    parser.add_argument("--seeded", default=None, metavar="ENTRY,...",
                        help="the panel entries (and 'random-init') --seeds applies to; the others "
                             "get seed 0 (default: every one)")
    parser.add_argument("--pretrain-per-task", action="store_true",
                        help="pretrain one backbone per data set the tasks read (RCL's protocol; "
                             "with --budget full for the paper's epochs per data set)")
    parser.add_argument("--pretrain-steps", type=number(), default=None,
                        help="pretraining steps per backbone (default: the budget's)")
    parser.add_argument("--pretrain-save-every", type=number(), default=None,
                        help="write each pretraining's resumable state every N steps (default: "
                             "pretraining's own)")
    parser.add_argument("--keep-state", action="store_true",
                        help="keep each pretraining's last_state.pt (for --resume) after its "
                             "backbone is written (default: removed; it is 2x the backbone)")
    parser.add_argument("--code-change", choices=("refuse", "rerun"), default="refuse",
                        help="a finished stage made by another code version (git commit): "
                             "refuse the rerun (default) or rerun such stages")
    parser.add_argument("--calibrate", action="store_true",
                        help="measure each planned stage's cost in reference seconds, one at a "
                             "time on one thread (benchmarks/runner/speed.py), instead of the run")
    stages = suite_stages()
    parser.add_argument("--tasks", default=",".join(stages),
                        help=f"comma-separated subset of {', '.join(stages)}")
    executor.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The suite's command line; bad input, a refused rerun or a failing write of its own is
    one line on stderr and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except (InputError, OSError) as err:
        parser.exit(2, f"{parser.prog}: error: {one_line(err)}\n")


def check_flags(budget: str, arch: str, panel: tuple[str, ...], tasks: tuple[str, ...],
                per_task: bool, given: dict[str, str]) -> None:
    """What would fail later fails now, dry run included: unknown tasks and panel entries, an
    arch the full protocols do not use, and --budget full without real pretraining data."""
    from pretrain.methods import METHODS
    from pretrain.regularizers import REGULARIZERS

    stages = suite_stages()
    if set(tasks) - set(stages):
        raise BadArgument(f"--tasks: unknown {sorted(set(tasks) - set(stages))}; "
                          f"choose from {', '.join(stages)}")
    for entry in panel:
        method, _, regularizer = entry.partition("+")
        if method not in METHODS or (regularizer and regularizer not in REGULARIZERS):
            raise BadArgument(f"--panel {entry}: unknown; each entry is METHOD[+REGULARIZER] "
                              f"with METHOD in {', '.join(METHODS)} and REGULARIZER in "
                              f"{', '.join(REGULARIZERS)}")
    problem = executor.full_budget_problem(budget, arch, list(tasks))
    if problem:
        raise BadArgument(problem)
    if budget == "full" and panel:
        keys = ({stages[name][0].data for name in tasks} if per_task
                else {pretrain_source(None, {**dict.fromkeys(data_sets()), **given})})
        synthetic = sorted(key for key in keys if key not in given)
        if synthetic:
            raise BadArgument(
                f"--budget full pretrains on real data, but the panel would pretrain on the "
                f"embedded synthetic {', '.join(synthetic)}: pass --data imagefolder=ROOT (or "
                "--pretrain-per-task with --data SET=ROOT for every task's set), or evaluate "
                "backbones trained elsewhere with --checkpoint NAME=PATH and --panel ''")


def seed_setting(args: argparse.Namespace, panel: tuple[str, ...]
                 ) -> tuple[int, tuple[str, ...] | None, tuple[str, ...] | None]:
    """(--seeds, the entries it applies to, the stages an extra seed runs): the default panel
    with no --seeds is the main job, which judges the RCL pair over seeds."""
    seeded = None
    if args.seeded is not None:
        seeded = tuple(e for e in args.seeded.split(",") if e)
        unknown = sorted(set(seeded) - {*panel, RANDOM_METHOD})
        if unknown:
            raise BadArgument(f"--seeded {','.join(unknown)}: not in --panel (nor random-init)")
    if args.seeds is None and seeded is None and panel == DEFAULT_PANEL:
        return DEFAULT_SEEDS, tuple(DEFAULT_SEEDED), tuple(SEED_TASKS)
    return args.seeds or 1, seeded, None


SLOW_IMAGES_PER_S = 63.0  # a slow machine of the reference kind (the README's measured run)


def dry_run_estimate(stages: list, budget: str, applies: bool, jobs: int,
                     done: dict[int, None]) -> str:
    """The plan's expected time from the measured costs (benchmarks/runner/costs.json), at the
    reference speed and at a slow machine's; for the full budget, GPU-hours from published
    training times (benchmarks/runner/gpu_hours.py); where neither applies (GPUs or real data
    below the full budget), it says so rather than guess."""
    if budget == "full":
        return gpu_hours.estimate_line(stages)
    at_reference = speed.REFERENCE_IMAGES_PER_S / speed.THREADS_RATIO  # one thread
    _, left = speed.estimate(stages, budget, applies, jobs, at_reference, done)
    if left is None:
        return ("[suite] estimate: no measured cost for these flags in "
                f"{speed.COSTS_FILE.name} (it holds --budget cpu on the embedded default set, "
                "ResNet-18, CPU only, and GPU-hours are estimated for --budget full only); the "
                "run's ETA learns from its finished stages")
    slow = left * speed.REFERENCE_IMAGES_PER_S / SLOW_IMAGES_PER_S
    return (f"[suite] estimate: {left / 60:.1f} min of wall time on a CPU at "
            f"{speed.REFERENCE_IMAGES_PER_S:.0f} images/s, {slow / 60:.1f} at "
            f"{SLOW_IMAGES_PER_S:.0f} (data generation and start excluded); no GPU")


def _main(args: argparse.Namespace) -> int:
    import torch  # here, not at the top: --help and argparse's errors answer without it

    panel = tuple(p for p in args.panel.split(",") if p)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    seeds, seeded, seed_tasks = seed_setting(args, panel)
    os.environ[leaderboard.BUDGET_ENV] = args.budget  # the stages' rows name the budget
    checkpoints, given = check_sources(args.checkpoint, args.data, list(panel))
    check_flags(args.budget, args.arch, panel, tasks, args.pretrain_per_task, given)

    out = Path(args.out).resolve()
    t0 = time.monotonic()
    if not args.dry_run:  # claimed before any work: a refused --out costs nothing
        out.mkdir(parents=True, exist_ok=True)
        claim_output(out, "python -m benchmarks.suite",
                     own=lambda folder: (folder / "state" / "speed.json").is_file())
        images_per_s = speed.measure_reference_speed()  # first: the estimate's unit
        # a stage's share at --jobs 2 (the same measurement where torch has one thread)
        one_thread = (images_per_s if torch.get_num_threads() == 1
                      else speed.measure_reference_speed(threads=1))
        print(f"[suite] reference speed {images_per_s:.1f} images/s (the budget is sized for "
              f"{speed.REFERENCE_IMAGES_PER_S:.0f}: {speed.REFERENCE_BENCHMARK}); "
              f"one thread {one_thread:.1f}", flush=True)
    synthetic = frozenset(data_sets()) - set(given)
    data = dict(given)
    if synthetic:
        from pretrain.synthetic import default_root

        print(f"[suite] embedded synthetic data ({args.size})", flush=True)
        data = {key: str(default_root(args.size) / key) for key in sorted(synthetic)} | data
    jobs = args.jobs or (1 if torch.cuda.is_available() else 2)
    cfg = PlanConfig(panel=panel, tasks=tasks, arch=args.arch, budget=args.budget,
                     gpus=args.gpus, data=MappingProxyType(data), synthetic=synthetic,
                     checkpoint=tuple(checkpoints),
                     checkpoint_archs=MappingProxyType(checkpoint_archs(checkpoints)),
                     seeds=seeds, seeded=seeded, seed_tasks=seed_tasks,
                     pretrain_per_task=args.pretrain_per_task,
                     pretrain_steps=args.pretrain_steps,
                     pretrain_save_every=args.pretrain_save_every)
    stages = plan(cfg, out)
    done, changed = review(stages, out, git_commit(), args.code_change)
    applies = (args.size == "default" and args.arch == "resnet18" and args.gpus == 1
               and not given and not torch.cuda.is_available() and jobs <= 2)
    if args.dry_run:  # every stage's command, resources and inputs; nothing is run or written
        print(executor.describe(stages, out, set(done), changed), flush=True)
        print(dry_run_estimate(stages, args.budget, applies, jobs, dict.fromkeys(done)),
              flush=True)
        return 0
    if args.calibrate:
        speed.calibrate(stages, out)
        return 0
    costs, left = speed.estimate(stages, args.budget, applies, jobs, one_thread,
                                 dict.fromkeys(done))
    expected = None if left is None else time.monotonic() - t0 + left
    print(f"[suite] {len(stages) - len(done)} stages to run; expected wall time "
          + (f"{expected / 60:.1f} min" if expected is not None
             else "? (no cost table for these flags; the ETA learns from finished stages)"),
          flush=True)
    speed.record(out, images_per_s=round(images_per_s, 1), one_thread=round(one_thread, 1),
                 reference_images_per_s=speed.REFERENCE_IMAGES_PER_S,
                 reference_benchmark=speed.REFERENCE_BENCHMARK, budget=args.budget, jobs=jobs,
                 expected_s=expected and round(expected),
                 path_checks=speed.path_checks(stages, args.budget))
    starter = None
    if args.executor != "local":
        starter = executor.JobStarter(
            executor.make_executor(args.executor, out / "jobs", args.partition,
                                   args.job_minutes),
            args.cpus_per_gpu, use_gpus=args.executor == "slurm")
        jobs = max(1, len(stages))
    try:
        records = run(stages, out, jobs, costs, speed.seconds_per_cost(one_thread, jobs),
                      starter, args.code_change, args.keep_state)
    except SuiteInterrupted as err:
        print(f"[suite] {err}: its running stages were ended; rerun the same command to "
              "continue", file=sys.stderr, flush=True)
        return 128 + err.signum
    speed.record(out, wall_s=round(time.monotonic() - t0, 1))
    path = report(out, records)
    failed = sum(r["status"] != "done" for r in records)
    print(f"[suite] {len(records) - failed}/{len(records)} stages done in "
          f"{(time.monotonic() - t0) / 60:.1f} min; report: {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
