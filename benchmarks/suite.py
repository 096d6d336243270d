"""The suite runner: from nothing to a leaderboard, report and plot, in one output folder.

    python -m benchmarks.suite [--out runs/suite] [--size default|tiny]
        [--panel simclr,simclr+rcl,...] [--checkpoint NAME=PATH ...] [--data SET=ROOT ...]
        [--arch resnet18] [--gpus N] [--jobs N] [--budget cpu|smoke|full]

With no arguments (the README's main job) it generates the embedded synthetic default, pretrains a
panel of ResNet-18 backbones on it plus the random-init control (``--weights random``, the same in
every stage), and runs every task of the table in ``benchmarks/tasks.py`` on each: COCO Mask R-CNN
(detectron2), MPII pose fixed and fine-tuned (mmpose), FairFace and Colorful-MNIST fixed and
fine-tuned, and COCO foreground/background. Every stage runs as its own process (the
same command a user would type), so a stage that fails for one backbone is recorded in the report
and the others go on; on a CPU two stages run at once. Finished stages leave a marker in
``<out>/state/``; rerunning skips them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import leaderboard
from benchmarks.tasks import TASKS, suite_stages
from pretrain.backbones import ARCHS
from pretrain.checkpoint import atomic_write, git_commit
from pretrain.data import DataError
from pretrain.open_backbone import RANDOM, RANDOM_METHOD

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PANEL = ("simclr", "simclr+rcl", "simclr+metamask", "byol+msr", "barlow_twins+mcr")

# Pretraining's flags per budget (each task's own are in benchmarks/tasks.py). "cpu" sizes every
# stage so that the whole default panel fits a 2-core CPU in 20 minutes: every stage runs for real,
# but far too briefly for its numbers to rank backbones (see the README). Its pretraining extras,
# by method or regularizer: a 2048-d Barlow Twins projector (the paper's 8192-d one alone costs
# 3.9 s a step on 2 cores) and the bi-level regularizers' meta step every 4th step (each costs 3-4
# regular steps). "full" is each engine's own protocol (hours on GPUs).
PRETRAIN_BUDGETS = {
    "cpu": ["--steps", "50", "--batch-size", "32"],
    "smoke": ["--steps", "2", "--batch-size", "8"],
    "full": [],
}
PRETRAIN_EXTRAS = {
    "cpu": {"barlow_twins": ["--method-arg", "proj_hidden_dim=2048",
                             "--method-arg", "proj_dim=2048"],
            **{reg: ["--regularizer-arg", "meta_every=4"] for reg in ("msr", "mcr", "metamask")}},
}
@dataclass
class Stage:
    backbone: str
    name: str
    argv: list[str]
    needs: str | None = None                 # a file the stage reads, made by an earlier stage
    outputs: list[str] = field(default_factory=list)


def plan(args: argparse.Namespace, out: Path) -> list[Stage]:
    """Every stage of the run, in order: pretraining first, then each backbone's tasks."""
    csv = str(out / "leaderboard.csv")
    data = args.data
    stages: list[Stage] = []
    weights: dict[str, str] = {}
    for entry in args.panel:
        method, _, regularizer = entry.partition("+")
        run = out / "pretrain" / entry.replace("+", "_")
        weights[entry] = str(run / "backbone.safetensors")
        argv = ["bash", str(ROOT / "tools" / "pretrain.sh"), "--method", method,
                "--regularizer", regularizer or "none", "--arch", args.arch, "--stem", "imagenet",
                "--out", str(run.parent), "--name", run.name, *PRETRAIN_BUDGETS[args.budget]]
        extra = PRETRAIN_EXTRAS.get(args.budget, {})
        argv += [*extra.get(method, []), *extra.get(regularizer, [])]
        if args.pretrain_steps:
            argv += ["--steps", str(args.pretrain_steps)]  # the last --steps wins
        if "colorful_mnist" in data:
            argv += ["--data", f"colorful_mnist={data['colorful_mnist']}"]
        stages.append(Stage(entry, "pretrain", argv, outputs=[weights[entry]]))
    weights[RANDOM_METHOD] = RANDOM
    weights.update(dict(args.checkpoint))

    for backbone, path in weights.items():
        # the random-init control: the same one in every stage (pretrain/open_backbone.py)
        chosen = (["--weights", RANDOM, "--arch", args.arch, "--stem", "imagenet"]
                  if path == RANDOM else ["--weights", path])
        for name, (task, protocol) in suite_stages().items():
            if name not in args.tasks:
                continue
            argv = [sys.executable, str(ROOT / task.script),
                    *_gpus(args, task.gpus_flag),
                    *task.protocol_flags(protocol),
                    *(task.synthetic_flags if task.data in args.synthetic else ()),
                    *chosen, "--out", str(out / name / backbone), "--leaderboard", csv,
                    "--data", str(data[task.data]), *task.budget_flags(args.budget, protocol)]
            stages.append(Stage(backbone, name, argv, needs=None if path == RANDOM else path))
    return stages


def _gpus(args: argparse.Namespace, flag: str) -> list[str]:
    return [flag, str(args.gpus)] if flag and args.gpus > 1 else []


def run(stages: list[Stage], out: Path, jobs: int = 1) -> list[dict]:
    """Run the stages not yet done, up to ``jobs`` at once (a stage starts once the stage making
    its input has ended); return one record per stage, in order (status, seconds, log)."""
    records: dict[int, dict] = {}
    waiting: list[int] = []
    for i, stage in enumerate(stages):
        marker = _marker(out, stage)
        record = json.loads(marker.read_text()) if marker.exists() else {}
        if record.get("status") == "done":
            records[i] = record
        else:
            waiting.append(i)
    made_by = {path: i for i, stage in enumerate(stages) for path in stage.outputs}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if jobs > 1:  # one share of the cores each, unless the caller chose
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **env}
    running: dict[int, tuple[subprocess.Popen, float]] = {}
    durations: list[float] = []
    started = time.monotonic()

    def ready(i: int) -> bool:
        maker = made_by.get(stages[i].needs or "")
        return maker is None or maker in records

    while waiting or running:
        for i in [i for i in waiting if ready(i)][:max(0, jobs - len(running))]:
            waiting.remove(i)
            stage = stages[i]
            left = (len(waiting) + len(running) + 1) / jobs
            eta = f"{left * statistics.mean(durations) / 60:.0f} min" if durations else "?"
            print(f"[suite {len(records) + len(running) + 1}/{len(stages)} | "
                  f"{(time.monotonic() - started) / 60:.1f} min | ETA {eta}] "
                  f"{stage.backbone}: {stage.name}", flush=True)
            if stage.needs and not Path(stage.needs).exists():
                _finish(out, stage, records, i, status="skipped", seconds=0.0,
                        reason=f"{stage.needs} was not produced (an earlier stage failed)")
                continue
            log = _log(out, stage)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as f:
                running[i] = (subprocess.Popen(stage.argv, stdout=f, stderr=subprocess.STDOUT,
                                               cwd=ROOT, env=env), time.monotonic())
        for i, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[i]
            seconds = time.monotonic() - t0
            durations.append(seconds)
            extra = {}
            if proc.returncode != 0:
                extra["reason"] = (f"exit {proc.returncode}: "
                                   + " | ".join(_tail(_log(out, stages[i]), 3)))
                print(f"  {stages[i].backbone}: {stages[i].name} failed ({extra['reason']}); "
                      f"see {_log(out, stages[i])}", flush=True)
            _finish(out, stages[i], records, i, seconds=round(seconds, 1),
                    status="done" if proc.returncode == 0 else "failed", **extra)
        time.sleep(0.2)
    return [records[i] for i in range(len(stages))]


def _log(out: Path, stage: Stage) -> Path:
    return out / "logs" / stage.backbone / f"{stage.name}.log"


def _marker(out: Path, stage: Stage) -> Path:
    return out / "state" / f"{stage.backbone}__{stage.name}.json"


def _finish(out: Path, stage: Stage, records: dict[int, dict], i: int, **result) -> None:
    """Record a stage's end, in memory and as its marker file."""
    record = {"backbone": stage.backbone, "stage": stage.name,
              "log": str(_log(out, stage)), **result}
    atomic_write(_marker(out, stage),
                 lambda f: f.write(json.dumps(record, indent=1).encode()))
    records[i] = record


def _tail(path: Path, lines: int) -> list[str]:
    text = path.read_text(errors="replace").strip().splitlines()
    return [line.strip()[:200] for line in text[-lines:]]


def report(out: Path, records: list[dict]) -> Path:
    """report.md (leaderboard beside published numbers, failures, timings) and panel.png."""
    csv = out / "leaderboard.csv"
    rows = leaderboard.read_rows(csv)[1] if csv.exists() else []
    lines = [f"# Suite report ({time.strftime('%Y-%m-%d %H:%M')}, commit {git_commit()})", ""]
    problems = [r for r in records if r["status"] != "done"]
    if problems:
        lines += ["## Stages that did not finish", "", "| backbone | stage | status | reason |",
                  "|---|---|---|---|"]
        lines += [f"| {r['backbone']} | {r['stage']} | {r['status']} | {r.get('reason', '')} |"
                  for r in problems] + [""]
    lines += ["## Leaderboard (measured rows beside published numbers of the same protocol)", "",
              leaderboard.markdown(leaderboard.with_references(rows)) if rows else "(no rows)", ""]
    found = leaderboard.claims(rows)
    if found:
        lines += ["## The papers' claims, tested on this panel", "",
                  "A claim holds when the measured difference has the published sign. Each "
                  "backbone here is one pretraining run (one seed), so a difference of a point "
                  "or two is within run-to-run noise; and on the CPU budget every backbone sees a "
                  "few thousand images, not the papers' hundreds of epochs. These rows say "
                  "whether this run reproduces a claim, not whether the claim is true.", "",
                  "| claim | task | protocol | metric | published | measured | difference "
                  "(published / measured) | holds | source |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {c['claim']} | {c['task']} | {c['protocol']} | {c['metric']} | "
                  f"{c['published'][0]:.1f} vs {c['published'][1]:.1f} | "
                  f"{c['measured'][0]:.1f} vs {c['measured'][1]:.1f} | "
                  f"{c['published'][0] - c['published'][1]:+.1f} / "
                  f"{c['measured'][0] - c['measured'][1]:+.1f} | "
                  f"{'yes' if c['holds'] else '**no**'} | {c['source']} |" for c in found]
        lines.append("")
    if rows:
        leaderboard.plot(leaderboard.with_references(rows), out / "panel.png")
        lines += ["![panel](panel.png)", ""]
    total = sum(r.get("seconds", 0.0) for r in records)
    lines += [f"## Timings (total {total / 60:.1f} min of stage time)", "",
              "| backbone | stage | status | seconds |", "|---|---|---|---|"]
    lines += [f"| {r['backbone']} | {r['stage']} | {r['status']} | {r.get('seconds', '')} |"
              for r in records]
    path = out / "report.md"
    atomic_write(path, lambda f: f.write("\n".join(lines).encode()))
    return path


def _pairs(values: list[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{flag} expects NAME=PATH, got {value!r}")
        pairs.append((name, path))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/suite", help="output folder (default runs/suite)")
    parser.add_argument("--size", default="default", choices=["default", "tiny"],
                        help="embedded synthetic data size, for sets without --data")
    parser.add_argument("--panel", default=",".join(DEFAULT_PANEL),
                        help="comma-separated METHOD[+REGULARIZER] backbones to pretrain "
                             "('' for none); a random-init control is always added")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="a backbone trained elsewhere (any format pretrain/foreign.py reads)")
    data_keys = tuple(dict.fromkeys(task.data for task in TASKS.values()))
    parser.add_argument("--data", action="append", default=[], metavar="SET=ROOT",
                        help=f"real data root for {', '.join(data_keys)}")
    parser.add_argument("--arch", default="resnet18", choices=ARCHS)
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per stage (detectron2 launch)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="stages run at once, each on its share of the CPU cores "
                             "(default: 2 on a CPU-only machine, where it is about 1.5x faster "
                             "than one stage on both cores; 1 with a GPU)")
    parser.add_argument("--budget", default="cpu", choices=sorted(PRETRAIN_BUDGETS),
                        help="cpu: sized for a 2-core CPU; smoke: a few steps each (tests); "
                             "full: the engines' own protocols")
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="pretraining steps per backbone (default: the budget's)")
    stages = suite_stages()
    parser.add_argument("--tasks", default=",".join(stages),
                        help=f"comma-separated subset of {', '.join(stages)}")
    args = parser.parse_args(argv)
    args.panel = [p for p in args.panel.split(",") if p]
    args.tasks = [t for t in args.tasks.split(",") if t]
    if set(args.tasks) - set(stages):
        parser.error(f"--tasks: unknown {sorted(set(args.tasks) - set(stages))}; "
                     f"choose from {', '.join(stages)}")
    args.checkpoint = _pairs(args.checkpoint, "--checkpoint")
    args.data = dict(_pairs(args.data, "--data"))
    unknown = set(args.data) - set(data_keys)
    if unknown:
        parser.error(f"--data: unknown set(s) {sorted(unknown)}; use {', '.join(data_keys)}")
    for name, path in [*args.checkpoint, *args.data.items()]:
        if not Path(path).exists():
            parser.error(f"{name}={path}: no such file or folder")
    readers = {task.data: task.reader for task in TASKS.values()}
    for key, root in args.data.items():  # before any stage: a bad root fails once, now
        try:
            readers[key](Path(root))
        except DataError as err:
            parser.error(f"--data {key}={root}: {err}")

    out = Path(args.out).resolve()
    t0 = time.monotonic()
    args.synthetic = set(data_keys) - set(args.data)
    if args.synthetic:
        from pretrain.synthetic import default_root

        print(f"[suite] embedded synthetic data ({args.size})", flush=True)
        synthetic = default_root(args.size)
        args.data = {key: str(synthetic / key) for key in args.synthetic} | args.data
    if args.jobs is None:
        import torch

        args.jobs = 1 if torch.cuda.is_available() else 2
    records = run(plan(args, out), out, max(1, args.jobs))
    path = report(out, records)
    failed = sum(r["status"] != "done" for r in records)
    print(f"[suite] {len(records) - failed}/{len(records)} stages done in "
          f"{(time.monotonic() - t0) / 60:.1f} min; report: {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
