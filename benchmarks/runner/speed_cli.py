"""``python -m benchmarks.speed``: this machine's reference speed, the default panel's step costs,
or the default main job's expected wall time (the cost model is :mod:`benchmarks.runner.speed`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.runner.plan import (
    DEFAULT_PANEL,
    DEFAULT_SEEDED,
    DEFAULT_SEEDS,
    PRETRAIN_EXTRAS,
    SEED_TASKS,
    PlanConfig,
    plan,
)
from benchmarks.runner.speed import (
    COSTS,
    REFERENCE_BENCHMARK,
    REFERENCE_IMAGES_PER_S,
    THREADS_RATIO,
    estimate,
    measure_reference_speed,
    measure_step,
    seconds_per_cost,
)
from benchmarks.runner.tasks import data_sets, suite_stages


def main(argv: list[str] | None = None) -> int:
    """Print this machine's reference speed on torch's default threads and on one, and their
    ratio beside :data:`THREADS_RATIO` (measure on an idle machine); with ``--step-costs``, the
    step cost of each default panel backbone (its cpu budget's flags) over the reference step's,
    in CPU seconds on one thread, interleaved (a loaded machine measures this well)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=main.__doc__)
    parser.add_argument("--step-costs", action="store_true")
    parser.add_argument("--at", type=float, metavar="IMAGES_PER_S",
                        help="print the default main job's expected wall time at this reference "
                             "speed (--jobs 2, data generated first) instead of measuring")
    args = parser.parse_args(argv)
    if args.at:
        data = {key: key for key in data_sets()}
        stages = plan(PlanConfig(  # the main job: the default panel, its RCL pair over 3 seeds
            panel=DEFAULT_PANEL, tasks=tuple(suite_stages()), arch="resnet18", budget="cpu",
            gpus=1, data=data, synthetic=frozenset(data), seeds=DEFAULT_SEEDS,
            seeded=tuple(DEFAULT_SEEDED), seed_tasks=tuple(SEED_TASKS)), Path("runs/suite"))
        table = COSTS["cpu"]
        one_thread = args.at / THREADS_RATIO
        costs, left = estimate(stages, "cpu", True, 2, one_thread, {})
        total = left + (table.start + table.data) * seconds_per_cost(one_thread, 2)
        pretraining = sum(c for s, c in zip(stages, costs) if s.name == "pretrain") / sum(costs)
        print(f"default main job, --budget cpu, {len(stages)} stages, --jobs 2: expected "
              f"{total / 60:.1f} min at {args.at:g} images/s (of which stages and report "
              f"{left / 60:.1f} min; pretraining {pretraining:.0%} of the stage time)")
        return 0
    if args.step_costs:
        extras = PRETRAIN_EXTRAS["cpu"]
        for entry in DEFAULT_PANEL:
            method, _, regularizer = entry.partition("+")
            flags = [*extras.get(method, []), *extras.get(regularizer, [])]
            # 1 + 4 steps: the meta step of meta_every=4 once among the timed ones
            step = measure_step(entry, flags, steps=4, warmup=1, threads=1, clock="cpu",
                                max_seconds=None)
            reference = measure_step("simclr", steps=4, warmup=1, threads=1, clock="cpu",
                                     max_seconds=None)
            print(f"{entry:<18} {' '.join(flags):<60} {step:7.1f} images per CPU s; "
                  f"step cost {reference / step:.2f}x the reference step's", flush=True)
        return 0
    default, one = measure_reference_speed(), measure_reference_speed(threads=1)
    print(f"reference speed {default:.1f} images/s (the cpu budget is sized for "
          f"{REFERENCE_IMAGES_PER_S:.0f}: {REFERENCE_BENCHMARK}); one thread {one:.1f}: ratio "
          f"{default / one:.2f} (stored THREADS_RATIO {THREADS_RATIO})")
    return 0
