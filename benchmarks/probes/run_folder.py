"""One probe run and its folder: the resolved command line, the backbone opened once, the output
folder claimed (``config.json``, ``log.txt``), the feature cache and the predictions it collects."""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from benchmarks.probes.config import (
    ProbeConfig,
    ProbeError,
    ProbeTask,
    parse_config,
    resolve,
    supervised_attrs,
)
from benchmarks.probes.example_predictions import Predictions
from benchmarks.probes.features import Features, cached_features
from benchmarks.results import leaderboard
from pretrain.cli import claim_output
from pretrain.files import atomic_write
from pretrain.open_backbone import RANDOM, Backbone, open_backbone

log = logging.getLogger("benchmarks")


def backbone_columns(backbone: Backbone, name: str | None = None) -> dict[str, Any]:
    """The leaderboard's backbone columns of ``backbone``
    (:func:`benchmarks.results.leaderboard.backbone_fields`); ``name``: its ``--backbone-name``."""
    return leaderboard.backbone_fields(backbone.weights, backbone.meta, name=name)


@dataclass(frozen=True)
class Run:
    """One probe run: its task, resolved config, backbone, output folder and timings."""

    task: ProbeTask
    cfg: ProbeConfig
    backbone: Backbone
    out: Path
    timings: dict[str, float]

    predictions: Predictions = field(default_factory=lambda: Predictions())

    @property
    def seeds(self) -> range:
        return range(self.cfg.seed, self.cfg.seed + self.cfg.trials)

    def load(self, split: str, transform: Any, **kwargs: Any) -> Dataset:
        return self.task.load(self.cfg.data, split, transform, **kwargs)

    def features(self, dataset: Dataset, desc: str, backbone: Backbone | None = None) -> Features:
        return cached_features(backbone or self.backbone, dataset,
                               self.cfg.cache_dir or self.out / "cache", self.cfg.device,
                               self.cfg.batch_size, self.cfg.workers, desc, self.timings)


def _setup_logging(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    log.setLevel(logging.INFO)
    log.handlers.clear()
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(out / "log.txt")):
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)


def prepare(task: ProbeTask, argv: list[str] | None, protocol: str | None = None) -> Run:
    """Parse and resolve the command line, open the backbone, and make the output folder
    (config.json, log.txt) of one run; ``protocol``: the one the task runs, if it has one."""
    task, cfg = resolve(task, parse_config(task, argv))
    attrs = supervised_attrs(task, cfg.supervised_on)
    if attrs and cfg.protocol:
        raise ProbeError("--supervised-on and --protocol exclude each other: --supervised-on "
                         "trains a backbone and then runs the fixed protocol on it")
    if not attrs and cfg.weights is None:
        raise ProbeError("--weights is required (a checkpoint, or 'random')")
    protocol = protocol or (f"supervised:{'+'.join(attrs)}" if attrs else
                            cfg.protocol or "fixed")
    backbone = open_backbone(cfg.weights or RANDOM, cfg.arch, cfg.stem, cfg.init_seed,
                             cfg.prefix, cfg.stride_in_1x1)
    name = backbone_columns(backbone)["backbone_id"]
    out = cfg.out or Path("runs/benchmarks") / task.name / name / protocol.replace(":", "_")
    claim_output(out, f"benchmarks/{task.name}.py {protocol}",
                 own=lambda folder: _earlier_run(folder, task.name, protocol))
    _setup_logging(out)
    atomic_write(out / "config.json", lambda f: f.write(json.dumps(
        {**cfg.to_json(), "task": task.name, "protocol": protocol}, indent=1).encode()))
    log.info(f"{task.name} / {protocol}: backbone {name} ({backbone.meta['arch']}, "
             f"{backbone.meta['stem']} stem) on {cfg.data} at {cfg.image_size} px, "
             f"device {cfg.device}; output {out}")
    return Run(task, cfg, backbone, out, {})


def _earlier_run(folder: Path, task: str, protocol: str) -> bool:
    """Whether ``folder`` holds a run of this task and protocol made before folders were marked
    (its config.json says so)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (config.get("task"), config.get("protocol")) == (
        task, protocol)
