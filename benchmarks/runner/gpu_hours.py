"""GPU-hours of a ``--budget full`` plan, from published training times (the dry run's estimate).

No full-budget stage has been timed by this suite, so the figures are the sources' own, in
V100-hours, stored with their sources in ``benchmarks/runner/costs.json`` (``full_budget_gpu``):

- a pretraining stage: the images it trains on (its ``--steps`` x ``--batch-size``, or its epochs x
  the images in its ``--data`` root) at MoCo v2's ResNet-50 throughput on a V100, scaled by the
  backbone's FLOPs, the image's pixels and the method's step cost over MoCo v2's (the CPU-measured
  ratios of ``step_over_reference``, the only per-method figures the suite has);
- a detectron2 stage: its iterations (``SOLVER.MAX_ITER``, else the schedule's) x the model zoo's
  seconds per iteration on 8 V100s, once per ``--trials``.

A stage with no published time (mmpose, the probes, semantic segmentation) is named, never
guessed.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from benchmarks.runner.speed import COSTS_FILE, last_int, last_value
from pretrain.config import DATA_IMAGE_SIZE, DEFAULT_BATCH, DEFAULT_EPOCHS, DEFAULT_IMAGE_SIZE
from pretrain.data import IMAGE_EXTENSIONS


def _anchors(path: Path = COSTS_FILE) -> tuple[dict, dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["full_budget_gpu"], data["budgets"]["cpu"]


def count_images(root: str) -> int:
    """Image files under ``root`` (what an epoch of pretraining on it reads, at most)."""
    return sum(name.lower().endswith(IMAGE_EXTENSIONS)
               for _, _, names in os.walk(root) for name in names)


def pretrain_hours(argv: Sequence[str], anchors: dict, cpu: dict) -> float | None:
    """V100-hours of one pretraining command (None: its data root holds no images)."""
    data = last_value(argv, "--data") or ""
    key, _, root = data.partition("=")
    steps = last_int(argv, "--steps")
    batch = last_int(argv, "--batch-size") or DEFAULT_BATCH["cuda"]
    if steps is not None:
        images = steps * batch
    else:
        per_epoch = count_images(root) if root else 0
        if not per_epoch:
            return None
        images = per_epoch * float(last_value(argv, "--epochs") or DEFAULT_EPOCHS)
    gflops = anchors["arch_gflops"]["values"]
    size = last_int(argv, "--image-size") or DATA_IMAGE_SIZE.get(key, DEFAULT_IMAGE_SIZE)
    method, regularizer = last_value(argv, "--method"), last_value(argv, "--regularizer")
    step = cpu["step_over_reference"]["values"]
    entry = f"{method}+{regularizer}" if regularizer not in (None, "none") else method
    factor = step.get(entry) or step.get(method, step["mocov2"]) * (
        cpu["regularized"]["value"] if entry != method else 1.0)
    cost = (gflops[last_value(argv, "--arch") or "resnet50"] / gflops["resnet50"]
            * (size / 224) ** 2 * factor / step["mocov2"])
    return images * cost / anchors["pretrain_images_per_s"]["value"] / 3600


def engine_hours(name: str, argv: Sequence[str], anchors: dict) -> float | None:
    """V100-hours of a detectron2 stage with a model-zoo time (None for any other)."""
    engine = anchors["engines"]["values"].get(name)
    if engine is None:
        return None
    iterations = last_int(argv, "SOLVER.MAX_ITER") or engine["iterations"]
    trials = last_int(argv, "--trials") or 1
    return engine["seconds_per_iter"] * engine["gpus"] * iterations * trials / 3600


def estimate_line(stages: Sequence) -> str:
    """The dry run's line: V100-hours of the stages with a published time, and which have none."""
    anchors, cpu = _anchors()
    pretrain, engines, unknown = 0.0, Counter(), Counter()
    for stage in stages:
        if stage.name.startswith("pretrain"):
            hours = pretrain_hours(stage.argv, anchors, cpu)
            pretrain += hours or 0.0
        else:
            hours = engine_hours(stage.name, stage.argv, anchors)
            engines[stage.name] += hours or 0.0
        if hours is None:
            unknown[stage.name] += 1
    total = pretrain + sum(engines.values())
    parts = [f"pretraining {pretrain:,.0f}"] + [f"{name} {h:,.0f}" for name, h in engines.items()
                                                if h]
    missing = ", ".join(f"{name} x{n}" for name, n in unknown.items())
    return (f"[suite] estimate: about {total:,.0f} V100-hours ({', '.join(parts)}) from published "
            f"training times ({COSTS_FILE.name}: full_budget_gpu, with sources; none measured "
            "here)" + (f"; no published time, not counted: {missing}" if missing else ""))
