"""The probes' command line: the flags every probe script shares, parsed into a
:class:`ProbeConfig` and resolved once against the data and the device.

A script (``benchmarks/fairface.py``, ...) contributes a :class:`ProbeTask`: its name,
attributes and how to read a split; :func:`parser` builds its flags from it.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from benchmarks.probes.features import native_image_size
from benchmarks.probes.protocols import FinetuneRecipe, LinearRecipe
from benchmarks.results import leaderboard
from pretrain.cli import IMAGE_SIZE, InputError, number, one_line_errors
from pretrain.open_backbone import RANDOM, add_backbone_arguments, is_random

# Default fine-tuning length: on the CPU a quarter epoch (the embedded default in a few minutes
# with the ImageNet stem), on a GPU a real schedule.
FINETUNE_EPOCHS = {"cpu": 0.25, "cuda": 30.0}


class ProbeError(InputError):
    """Bad input to a probe (flag or data); the message names it and the fix."""


@dataclass(frozen=True)
class ProbeTask:
    """What a probe script contributes: its name, attributes and how to read a split."""

    name: str                                   # leaderboard task
    # attribute -> number of classes, or a function of the data root that returns it
    classes: dict[str, int] | Callable[[Path], dict[str, int]]
    load: Callable[[Path, str, Any], Dataset]   # (root, "train"|"test", transform) -> reader
    default_data: Callable[[], Path] | None     # embedded default root (None: --data required)
    description: str = ""
    protocols: tuple[str, ...] = ("fixed", "finetune")   # its --protocol choices
    supervised: bool = True                     # whether it offers --supervised-on
    hflip: bool = True                          # fine-tuning may flip images (False: digits)
    command: str = ""                           # its console script; default ssl-<name>


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ProbeConfig:
    """One probe run's settings: parsed from the command line, then resolved once by
    :func:`resolve` (data root, resolution, stem of the random-init control, workers, fine-tuning
    length); never changed after that. ``config.json`` in the run folder holds it."""

    weights: str | None = None
    prefix: str | None = None
    stride_in_1x1: bool | None = None
    arch: str | None = None
    stem: str | None = None
    init_seed: int = 0
    backbone_name: str | None = None
    data: Path | None = None
    out: Path | None = None
    leaderboard: Path = leaderboard.DEFAULT_PATH
    protocol: str | None = None
    supervised_on: str | None = None
    trials: int = 1
    seed: int = 0
    epochs: float | None = None
    lr: float = FinetuneRecipe.lr
    linear_epochs: int = LinearRecipe.epochs
    image_size: int | None = None
    batch_size: int = 128
    workers: int | None = None
    cache_dir: Path | None = None
    device: str = "cpu"
    feature_mask: str = "on"

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def parser(task: ProbeTask) -> argparse.ArgumentParser:
    """The flags every probe script shares (each sets a :class:`ProbeConfig` field)."""
    p = one_line_errors(argparse.ArgumentParser(
        prog=task.command or f"ssl-{task.name.replace('_', '-')}", description=task.description,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    add_backbone_arguments(p, random_stem="'small' for images of 64 px or less, else "
                           "'imagenet'")
    p.add_argument("--data", type=Path, help="data root" + (
        "" if task.default_data is None else " (default: the embedded synthetic default)"))
    p.add_argument("--out", type=Path, help="output folder (default runs/benchmarks/"
                   f"{task.name}/<backbone>/<protocol>)")
    p.add_argument("--leaderboard", type=Path, default=ProbeConfig.leaderboard,
                   help=f"leaderboard CSV to add rows to (default {ProbeConfig.leaderboard})")
    if len(task.protocols) > 1:
        p.add_argument("--protocol", choices=task.protocols, help="fixed: frozen features, "
                       "linear probe and kNN (k=5, 200); finetune: whole backbone + heads "
                       "(default fixed)")
    if task.supervised:
        names = "class" if callable(task.classes) else ", ".join(task.classes)
        p.add_argument("--supervised-on", metavar="ATTR[,ATTR]",
                       help="train a backbone from --weights (default random init) supervised on "
                       f"these attributes of {names} ('all' for every one), then "
                       "linear-probe every attribute: the 'supervised on X' ceiling")
    p.add_argument("--trials", type=number(), default=ProbeConfig.trials, metavar="N",
                   help="probe repetitions with seeds S..S+N-1 (S: --seed), reported as "
                        "mean/std (default %(default)s)")
    p.add_argument("--seed", type=number(int, 0), default=ProbeConfig.seed, metavar="S",
                   help="the first trial's seed (the suite gives backbone of pretraining seed S "
                        "the probe seed S; default %(default)s)")
    if "finetune" in task.protocols or task.supervised:
        positive = number(float, 0, above=True)
        p.add_argument("--epochs", type=positive, help="fine-tuning epochs (fractions allowed; "
                       f"default {FINETUNE_EPOCHS['cpu']:g} on the CPU, a quick look sized "
                       f"for minutes; {FINETUNE_EPOCHS['cuda']:g} on a GPU)")
        p.add_argument("--lr", type=positive, default=ProbeConfig.lr, help="fine-tuning "
                       "learning rate (SGD, batch 64; default %(default)s)")
    p.add_argument("--linear-epochs", type=number(), default=ProbeConfig.linear_epochs,
                   help="linear-probe epochs (default %(default)s)")
    p.add_argument("--init-seed", type=int, default=ProbeConfig.init_seed,
                   help="seed of the random-init control")
    p.add_argument("--image-size", type=IMAGE_SIZE, help="resolution fed to the backbone "
                   "(default: the first train image's shorter side, at most 224)")
    p.add_argument("--batch-size", type=number(), default=ProbeConfig.batch_size,
                   help="extraction batch size")
    p.add_argument("--workers", type=number(int, 0), help="DataLoader workers (default 0 on "
                   "the CPU, 8 on a GPU)")
    p.add_argument("--cache-dir", type=Path, help="feature cache folder (default: cache/ in "
                   "the run folder --out; a folder of its own shares it between runs)")
    p.add_argument("--device", default=default_device(), help="cpu or cuda (default %(default)s)")
    p.add_argument("--feature-mask", choices=("on", "off"), default=ProbeConfig.feature_mask,
                   help="on: kNN of a MetaMask backbone on its features times its mask, as its "
                   "paper scores it (the plain kNN reported as knnK_unmasked); off: plain kNN "
                   "only (default %(default)s)")
    return p


def parse_config(task: ProbeTask, argv: list[str] | None = None) -> ProbeConfig:
    """The command line of ``task``'s script as a :class:`ProbeConfig` (not yet resolved)."""
    return ProbeConfig(**vars(parser(task).parse_args(argv)))


def resolve(task: ProbeTask, cfg: ProbeConfig) -> tuple[ProbeTask, ProbeConfig]:
    """Check the config and fill what it leaves to the data and device; returns the task with
    its classes (read from the data for an ImageFolder) and the resolved config."""
    if cfg.trials < 1:
        raise ProbeError(f"--trials must be at least 1, got {cfg.trials}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ProbeError(f"--device {cfg.device}: no CUDA device here; use --device cpu")
    data = cfg.data
    if data is None:
        if task.default_data is None:
            raise ProbeError(f"{task.name}: --data is required (no embedded default)")
        data = task.default_data()
    if not data.exists():
        raise ProbeError(f"--data {data}: no such folder")
    if callable(task.classes):
        task = replace(task, classes=task.classes(data))
    train = task.load(data, "train", None)  # both splits' files checked before any is written
    task.load(data, "test", None)
    image_size = cfg.image_size or native_image_size(train)
    stem = cfg.stem
    if is_random(cfg.weights or RANDOM) and stem is None:
        stem = "small" if image_size <= 64 else "imagenet"
    cpu = cfg.device == "cpu"
    return task, replace(
        cfg, data=data, image_size=image_size, stem=stem,
        workers=cfg.workers if cfg.workers is not None else (
            0 if cpu else min(8, os.cpu_count() or 1)),
        epochs=cfg.epochs if cfg.epochs is not None else FINETUNE_EPOCHS["cpu" if cpu else "cuda"])


def supervised_attrs(task: ProbeTask, value: str | None) -> list[str]:
    """The attributes named by ``--supervised-on`` (``all``: every one); [] when it is not set."""
    if not value:
        return []
    attrs = list(task.classes) if value == "all" else [a.strip() for a in value.split(",")]
    unknown = [a for a in attrs if a not in task.classes]
    if unknown or not attrs:
        raise ProbeError(f"--supervised-on {value}: unknown attribute(s) {unknown}; choose "
                         f"among {', '.join(task.classes)} or 'all'")
    return attrs
