"""The machine's reference speed and the suite's expected wall time, from one cost model.

The measured costs live in ``benchmarks/runner/costs.json``, each with the command that measured
it. The reference benchmark is the pretraining step the CPU budget was sized on::

    .venv/bin/python tools/bench_pretrain.py --methods simclr --sources synthetic \\
        --batch-size 32 --steps 8 --warmup 2

(SimCLR's training step on a ResNet-18, ImageNet stem, 64 px random tensors, batch 32, LARS, every
CPU thread torch uses by default). :func:`measure_reference_speed` runs that same step, the same 2
untimed and up to 8 timed steps (4 s at most), in the suite's own process before any stage starts
and returns images/s; the suite measures it on every thread (the figure the budget is sized on)
and on one (the share of each of the two stages ``--jobs 2`` runs at once, which the estimate
uses: on a machine loaded by others the step on every thread can lose many times more).

Every stage's cost is stored in *reference seconds*: its wall seconds on a machine that runs the
benchmark at :data:`REFERENCE_IMAGES_PER_S`, two stages at a time on 2 cores (the suite's default
``--jobs 2``). A machine at ``s`` images/s on one thread takes ``cost * REFERENCE_IMAGES_PER_S /
(s * THREADS_RATIO)`` seconds per stage (:func:`seconds_per_cost`); :func:`expected_left` lays
the stages out as the runner starts them (in order, up to ``jobs`` at once, a stage after the one
making its input) and returns the wall time until the last ends. The progress line's ETA is the
same function, its costs scaled by observed / predicted of the stages finished so far. The work
never depends on the speed: only the estimate does.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.runner.stages import after_of

REFERENCE_IMAGES_PER_S = 120.0   # the budget is sized for a machine at least this fast (issue 21)
REFERENCE_BENCHMARK = ("tools/bench_pretrain.py --methods simclr --sources synthetic "
                       "--batch-size 32 --steps 8 --warmup 2")
BATCH, IMAGE_SIZE, WARMUP_STEPS, TIMED_STEPS = 32, 64, 2, 8
MAX_TIMED_SECONDS = 4.0  # a loaded machine stops timing here, after 2 timed steps at least


def measure_reference_speed(steps: int = TIMED_STEPS, warmup: int = WARMUP_STEPS,
                            threads: int | None = None, clock: str = "wall") -> float:
    """Images/s of the reference benchmark's training step on this machine's CPU, measured here
    on ``threads`` torch threads (default: torch's, as the benchmark), per second of ``clock``:
    ``wall`` (the benchmark's) or ``cpu`` (this process's CPU time, which others' load on the
    machine hardly changes). The process's random state and thread count are left as they were.
    """
    return measure_step("simclr", steps=steps, warmup=warmup, threads=threads, clock=clock)


def measure_step(entry: str, flags: Sequence[str] = (), steps: int = TIMED_STEPS,
                 warmup: int = WARMUP_STEPS, threads: int | None = None,
                 clock: str = "wall", max_seconds: float | None = MAX_TIMED_SECONDS) -> float:
    """Images/s of the training step of ``entry`` (METHOD[+REGULARIZER]; ``flags``: its
    ``--method-arg``/``--regularizer-arg K=V`` pretraining flags) on the reference benchmark's
    random tensors (tools/bench_pretrain.py's ``synthetic`` source), as above."""
    import torch

    from pretrain.backbones import FEATURE_DIMS, build_resnet
    from pretrain.config import key_value
    from pretrain.methods import METHODS, Regularizer, build_method
    from pretrain.optim import build_optimizer
    from pretrain.train import training_step

    method_name, _, regularizer_name = entry.partition("+")
    options: dict[str, dict] = {"--method-arg": {}, "--regularizer-arg": {}}
    for flag, value in zip(flags[::2], flags[1::2]):
        options[flag].update([key_value(value)])
    timer = time.perf_counter if clock == "wall" else time.process_time
    threads_before = torch.get_num_threads()
    with torch.random.fork_rng():
        torch.set_num_threads(threads or threads_before)
        torch.manual_seed(0)
        method = build_method(method_name, build_resnet("resnet18", "imagenet"),
                              FEATURE_DIMS["resnet18"], **options["--method-arg"])
        regularizer = Regularizer()
        if regularizer_name:
            from pretrain.regularizers import REGULARIZERS

            cfg = argparse.Namespace(method=method_name, image_size=IMAGE_SIZE, stem="imagenet",
                                     regularizer_args=options["--regularizer-arg"])
            regularizer = REGULARIZERS[regularizer_name](method, cfg)
        defaults = METHODS[method_name].DEFAULTS
        optimizer = build_optimizer(defaults["optimizer"],
                                    [p for p in method.parameters() if p.requires_grad]
                                    + regularizer.joint_parameters(),
                                    defaults["lr"] * BATCH / 256, defaults["weight_decay"], 0.9)
        x = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
        batch = {"x1": x, "x2": x.flip(3), "plain": x}
        total, timed = warmup + steps, 0
        for step in range(total):
            if step == warmup:
                started = timer()
            training_step(method, method, regularizer, optimizer, batch, step, step / total,
                          lr=optimizer.param_groups[0]["lr"], amp=False)
            timed += step >= warmup
            if max_seconds and timed >= 2 and timer() - started > max_seconds:
                break
        seconds = timer() - started
        torch.set_num_threads(threads_before)
    return BATCH * timed / seconds


@dataclass(frozen=True)
class BudgetCosts:
    """One budget's stage costs in reference seconds (see the module's docstring), with the
    command that measured them. A pretraining stage costs ``pretrain_start`` plus
    ``pretrain_step[entry]`` per step (its step count read from its command line, so
    ``--pretrain-steps`` is priced); a pair not in the table costs its base method's step times
    ``regularized``."""

    pretrain_start: float
    pretrain_step: Mapping[str, float]            # by METHOD[+REGULARIZER]
    regularized: float                            # a regularized step over its base's, if absent
    stages: Mapping[str, float]                   # by suite stage name (benchmarks/runner/tasks.py)
    start: float      # the runner before its stages: imports, the reference step, the plan
    data: float       # generating the embedded default set (a fresh clone's first run)
    report: float     # the report and its plot, after the last stage
    measured_by: str

    def stage(self, name: str, backbone: str, steps: int | None) -> float | None:
        if name != "pretrain":
            return self.stages.get(name)
        entry = backbone.partition(".seed")[0]  # another seed of an entry costs the same
        method = entry.partition("+")[0]
        step = self.pretrain_step.get(entry)
        if step is None and method in self.pretrain_step:
            step = self.pretrain_step[method] * self.regularized
        return None if step is None or steps is None else self.pretrain_start + steps * step


COSTS_FILE = Path(__file__).with_name("costs.json")  # each cost with the command that measured it


def load_costs(path: Path = COSTS_FILE) -> tuple[float, dict[str, BudgetCosts]]:
    """(THREADS_RATIO, {budget: its costs}) from the measured cost file. THREADS_RATIO: the
    reference step's wall speed on torch's default threads (2 on 2 cores) over a one-thread
    stage's speed, on an idle machine (a stage of --jobs 2 runs on one thread, so its cost
    measured on one thread converts to reference seconds through it). A pretraining step costs
    its step over the reference step's, plus the input pipeline's images, at one thread."""
    data = json.loads(path.read_text(encoding="utf-8"))
    ratio = data["threads_ratio"]["value"]
    budgets = {}
    for budget, table in data["budgets"].items():
        extra = table["input_pipeline_images"]["value"]
        budgets[budget] = BudgetCosts(
            pretrain_start=table["pretrain_start"]["value"],
            pretrain_step={entry: round((BATCH * factor + extra) * ratio
                                        / REFERENCE_IMAGES_PER_S, 2)
                           for entry, factor in table["step_over_reference"]["values"].items()},
            regularized=table["regularized"]["value"], stages=table["stages"]["values"],
            start=table["start"]["value"], data=table["data"]["value"],
            report=table["report"]["value"],
            measured_by=f"{path.name}: {table['applies_to']}")
    return ratio, budgets


THREADS_RATIO, COSTS = load_costs()
# A stage alone on 2 threads runs this much faster than beside another on one (the README's
# "--jobs 2 is about 1.5x faster than one stage on both cores": 2 / 1.5).
SPEEDUP_ALONE = {1: 2 / 1.5, 2: 1.0}


def stage_costs(stages: Sequence, budget: str, applies: bool) -> list[float | None]:
    """Each stage's cost in reference seconds (None where the table has none, or where it does
    not apply: another data size, architecture or device than it was measured on)."""
    table = COSTS.get(budget) if applies else None
    if table is None:
        return [None] * len(stages)
    return [table.stage(s.name, s.backbone, last_int(s.argv, "--steps")) for s in stages]


def estimate(stages: Sequence, budget: str, applies: bool, jobs: int, one_thread: float,
             done: Mapping[int, float | None]) -> tuple[list[float | None], float | None]:
    """The stages' costs and the wall seconds left until the report is written (None without a
    cost table for these flags), the ``done`` stages excluded."""
    costs = stage_costs(stages, budget, applies)
    scale = seconds_per_cost(one_thread, jobs)
    left = expected_left(costs, after_of(stages), jobs, scale, done=done)
    report = COSTS[budget].report if applies and budget in COSTS else 0.0
    return costs, None if left is None else left + report * scale


def last_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of the last ``flag`` in ``argv`` (the one argparse keeps; for detectron2's
    ``KEY VALUE`` overrides, the one its config keeps), if any."""
    at = [i for i, arg in enumerate(argv[:-1]) if arg == flag]
    return argv[at[-1] + 1] if at else None


def last_int(argv: Sequence[str], flag: str) -> int | None:
    value = last_value(argv, flag)
    return None if value is None else int(value)


def expected_left(costs: Sequence[float | None], after: Sequence[int | None], jobs: int,
                  seconds_per_cost: float, done: Mapping[int, float | None] | None = None,
                  running: Mapping[int, float] | None = None) -> float | None:
    """Wall seconds until the last stage ends, laid out as the runner starts them.

    ``costs[i]``: stage i's cost (None: unknown); ``after[i]``: the stage whose end it waits for;
    ``seconds_per_cost``: seconds per unit of cost on this machine before correction. ``done``:
    finished stages, with their observed seconds where they ran in this run (None: finished
    earlier, or skipped); ``running``: stages started, with their seconds so far. Predictions are
    scaled by observed / predicted seconds of the finished stages with a cost (unknown costs get
    the mean observed stage's, none before one finishes). None when nothing can be predicted.
    """
    done, running = done or {}, running or {}
    pairs = [(costs[i] * seconds_per_cost, s) for i, s in done.items()
             if s is not None and costs[i] is not None]
    scale = sum(s for _, s in pairs) / sum(p for p, _ in pairs) if pairs and any(
        p for p, _ in pairs) else 1.0
    observed = [s for s in done.values() if s is not None]
    fallback = sum(observed) / len(observed) if observed else None
    predicted: list[float | None] = [c * seconds_per_cost * scale if c is not None else fallback
                                     for c in costs]
    if any(predicted[i] is None for i in range(len(costs)) if i not in done):
        return None
    ends = {i: 0.0 for i in done}           # end time of each stage, from now
    slots = []                              # end times of the stages holding a slot
    for i, elapsed in running.items():
        ends[i] = max(0.0, predicted[i] - elapsed)
        slots.append(ends[i])
    waiting = [i for i in range(len(costs)) if i not in ends]
    now = 0.0
    while waiting:
        free = jobs - sum(end > now for end in slots)
        ready = [i for i in waiting if after[i] is None or ends.get(after[i], now + 1) <= now]
        for i in ready[:max(0, free)]:
            waiting.remove(i)
            ends[i] = now + predicted[i]
            slots.append(ends[i])
        later = [end for end in slots if end > now]
        if later:
            now = min(later)
        elif waiting and not ready:
            raise ValueError(f"stage {waiting[0]} waits for a stage that never starts")
    return max([0.0, *ends.values()])


def seconds_per_cost(one_thread: float, jobs: int) -> float:
    """Wall seconds per reference second, ``jobs`` stages at a time, on a machine that runs the
    reference step at ``one_thread`` images/s on one thread, the share of a stage at ``--jobs
    2`` (its cost was measured so: the estimate does not rest on :data:`THREADS_RATIO`, and on a
    machine loaded by others it sees what the stages will get, where the step on every thread
    can lose many times more)."""
    return REFERENCE_IMAGES_PER_S / (one_thread * THREADS_RATIO) / SPEEDUP_ALONE.get(jobs, 1.0)


def record(out: Path, **fields: object) -> dict:
    """Merge ``fields`` into ``<out>/state/speed.json`` (the run's reference speed, estimate and
    wall time, read by the report)."""
    path = out / "state" / "speed.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return data


def calibrate(stages: Sequence, out: Path) -> list[dict]:
    """Run each stage alone on one thread (as ``--jobs 2`` runs it on 2 cores), timing its CPU
    (its whole process tree), with the reference step's one-thread speed per CPU second measured
    before and after it; print each stage's cost in reference seconds and return the rows.

    CPU seconds hardly change with others' load on the machine, so a loaded machine measures the
    ratio stage / reference step well; the conversion to reference seconds,
    :data:`THREADS_RATIO`, needs an idle machine (``python -m benchmarks.speed``).
    """
    import os
    import resource
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    one_thread_at_reference = REFERENCE_IMAGES_PER_S / THREADS_RATIO
    rows = []
    for stage in stages:
        before = measure_reference_speed(threads=1, clock="cpu")
        log = out / "calibrate" / f"{stage.backbone}__{stage.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        with open(log, "w") as f:
            code = subprocess.call(stage.argv, stdout=f, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - wall
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
        speed = (before + measure_reference_speed(threads=1, clock="cpu")) / 2
        row = {"backbone": stage.backbone, "stage": stage.name, "exit": code,
               "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
               "reference_cpu_images_per_s": round(speed, 1),
               "cost": round(cpu * speed / one_thread_at_reference, 1)}
        rows.append(row)
        print(f"[calibrate] {stage.backbone}: {stage.name}: exit {code}, {cpu:.1f} CPU s "
              f"({wall:.1f} s wall), reference {speed:.1f} images per CPU s: cost "
              f"{row['cost']:.1f} reference s", flush=True)
    (out / "calibrate.json").write_text(json.dumps(rows, indent=1))
    return rows


def path_checks(stages: Sequence, budget: str) -> dict[str, list[str]]:
    """The path-check stages of the plan (``SuiteTask.path_checks``) and the backbones they run
    on; empty on the full budget, where they run on every backbone."""
    from benchmarks.runner.tasks import suite_stages

    checks = {name for name, (task, protocol) in suite_stages().items()
              if protocol in task.path_checks}
    ran = [stage for stage in stages if stage.name in checks] if budget != "full" else []
    return {"stages": list(dict.fromkeys(s.name for s in ran)),
            "backbones": list(dict.fromkeys(s.backbone for s in ran))}
