"""The MPII driver's settings and the mmengine config of one run.

:class:`MpiiPoseConfig` is one run's settings as the command line gives them
(:mod:`transfer.mpii_pose`). :func:`read_config` reads an mmengine config from any path with
``--cfg-options`` merged in, as mmengine's own ``tools/train.py`` does; :func:`build_config` adds
what the driver owns on top (the backbone, the protocol, the data and the schedule), so those win
over the file and the options.

Trust: a Python config is a program. mmengine runs it to read it (``_base_`` files included, and
even the ``_base_`` line is evaluated), so a ``.py`` config is only as safe as its author; it is
read from any path, like any script a user runs. A YAML or JSON config (and a YAML ``_base_``) is
data: mmengine would read YAML with PyYAML's full loader, which builds Python objects from tags
(``!!python/object/apply`` runs a call); ``transfer/compat.py`` makes it the safe loader, and a
file with such tags is refused in one line.

The schedule: the config's epochs become iterations of mmengine's ``IterBasedTrainLoop`` over an
``InfiniteSampler`` (the epoch loop's iterator sleeps 2 s at every epoch end, see
``mmengine/runner/loops.py``; the infinite sampler never ends an epoch). Epoch boundaries of the
schedule (LR steps, validation, checkpoints) scale to the run's length, so ``--max-iters N``
shortens the whole recipe to N iterations; the iteration warm-up is capped at a tenth of the run.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config

from benchmarks.results.leaderboard import DEFAULT_PATH
from pretrain.backbones import RESNETS
from pretrain.cli import InputError
from transfer.compat import UnsafeConfigError  # its guards apply to mmengine when imported

PROTOCOLS = ("fixed", "finetune")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
FULL_CONFIG = CONFIG_DIR / "mpii_td-hm_res50_256x256.py"
CPU_CONFIG = CONFIG_DIR / "mpii_cpu_128x128.py"


class MpiiPoseError(InputError):
    """Unusable input for the MPII driver; the message names the file or flag and the fix."""


@dataclass(frozen=True)
class MpiiPoseConfig:
    """One run's settings, parsed from the command line by :func:`transfer.mpii_pose.parse_args`;
    never changed (what it leaves unset, data root, config and run folder, the run derives)."""

    weights: str | None
    backbone_name: str | None = None  # --backbone-name: the leaderboard's name of the backbone
    prefix: str | None = None
    stride_in_1x1: bool | None = None
    arch: str | None = None
    stem: str | None = None
    protocol: str = "fixed"
    data: Path | None = None
    out: Path | None = None
    name: str | None = None
    max_iters: int | None = None
    batch_size: int | None = None
    val_images: int | None = None
    config: Path | None = None
    cfg_options: dict[str, Any] | None = None
    seed: int = 0
    leaderboard: Path = DEFAULT_PATH
    launcher: str = "none"
    resume: bool = False
    eval_only: bool = False
    gpus: int = 1


def read_config(path: Path, options: dict[str, Any] | None = None) -> Config:
    """mmengine's config from ``path`` (a ``.py`` one runs as code; YAML is read as plain data
    only) with ``options`` (``--cfg-options``) merged in."""
    if not path.is_file():
        raise MpiiPoseError(f"--config {path}: no such file")
    if path.suffix not in (".py", ".yaml", ".yml", ".json"):
        raise MpiiPoseError(f"--config {path}: not an mmengine config (.py, .yaml, .yml or .json)")
    try:
        # unformatted: the Runner prints and dumps the config, and yapf takes about a second a
        # time on 2 cores (several times a run); the text is the same Python either way
        cfg = Config.fromfile(str(path), format_python_code=False)
    except UnsafeConfigError as err:
        raise MpiiPoseError(f"--config {path}: {err}") from err
    if options:
        cfg.merge_from_dict(options)
    return cfg


def build_config(cfg: Config, *, data_root: Path, backbone_file: Path, arch: str, protocol: str,
                 out_dir: Path, n_train: int, max_iters: int | None = None,
                 batch_size: int | None = None, val_images: int | None = None, seed: int = 0,
                 launcher: str = "none", resume_from: str | None = None,
                 style: str = "pytorch") -> Config:
    """``cfg`` (from :func:`read_config`, changed in place and returned) plus backbone, protocol,
    data and schedule; ``resume_from``: the Runner checkpoint to resume."""
    if protocol not in PROTOCOLS:
        raise MpiiPoseError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    cfg.work_dir = str(out_dir)
    cfg.launcher = launcher
    if resume_from:
        cfg.resume, cfg.load_from = True, resume_from
    cfg.randomness = dict(seed=seed)
    if not torch.cuda.is_available():
        cfg.env_cfg.dist_cfg = dict(backend="gloo")

    backbone = cfg.model.backbone
    backbone.depth = RESNETS[arch].depth
    backbone.style = style  # 'caffe': stride in the 1x1 conv, as the weights were trained
    backbone.init_cfg = dict(type="Pretrained", checkpoint=str(backbone_file))
    if protocol == "fixed":
        backbone.frozen_stages = 4  # stem + all four stages: requires_grad False, BN in eval
        backbone.norm_eval = True  # BN statistics stay those of the checkpoint
    cfg.model.head.in_channels = RESNETS[arch].feature_dim

    root = Path(data_root).resolve()
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = str(root)
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.headbox_file = str(root / "annotations" / "mpii_gt_val.mat")
        if val_images:
            loader.dataset.indices = val_images  # mmengine: the first N samples
    if batch_size:
        cfg.train_dataloader.batch_size = batch_size
    _iteration_schedule(cfg, n_train, max_iters)
    return cfg


def _iteration_schedule(cfg: Config, n_train: int, max_iters: int | None) -> None:
    """Replace the epoch loop by an iteration loop over an infinite sampler (no epoch-end sleep),
    scaling every epoch boundary of the schedule to the run's length."""
    epochs = cfg.train_cfg.max_epochs
    world = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS")
                or os.environ.get("OMPI_COMM_WORLD_SIZE") or 1)  # set before mmengine's init
    per_epoch = math.ceil(n_train / (cfg.train_dataloader.batch_size * world))
    total = max_iters or epochs * per_epoch

    def to_iters(epoch: float) -> int:
        return max(1, round(epoch / epochs * total))

    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=total,
                         val_interval=to_iters(cfg.train_cfg.get("val_interval", epochs)))
    cfg.train_dataloader.sampler = dict(type="InfiniteSampler", shuffle=True)
    schedulers = []
    for sched in copy.deepcopy(cfg.param_scheduler):
        if sched.get("by_epoch", True):
            sched.update(by_epoch=False, begin=round(sched.get("begin", 0) / epochs * total),
                         end=min(total, to_iters(sched.get("end", epochs))))
            if "milestones" in sched:
                sched.milestones = [to_iters(m) for m in sched.milestones]
        else:
            sched.end = max(1, min(sched.get("end", total), total // 10))
        schedulers.append(sched)
    cfg.param_scheduler = schedulers
    hook = cfg.default_hooks.checkpoint
    hook.update(by_epoch=False, interval=to_iters(hook.get("interval", epochs)))
    cfg.log_processor.by_epoch = False
