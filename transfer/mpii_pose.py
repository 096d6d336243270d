"""MPII pose transfer: mmpose's SimpleBaseline on a suite backbone, scored by PCKh.

    python transfer/mpii_pose.py --weights FILE [--protocol fixed|finetune] [--data MPII_ROOT]
                                 [--out DIR] [--max-iters N] [--leaderboard CSV]

Everything that trains and scores is mmpose's own: mmengine's Runner, ``MpiiDataset`` with the
head boxes (``headbox_file``), the top-down SimpleBaseline (mmpose ResNet + ``HeatmapHead`` with
three deconvolutions), flip test and ``MpiiPCKAccuracy`` (PCKh@0.5 per joint group and mean,
PCKh@0.1). The config is ``configs/mpii_td-hm_res50_256x256.py`` (mmpose's
``td-hm_res50_8xb64-210e_mpii-256x256``) for real data, ``configs/mpii_cpu_128x128.py`` for the
embedded synthetic set (used when ``--data`` is absent); ``--config`` picks another.

What this driver adds to the config:
- the backbone: ``--weights`` is opened once by ``pretrain/open_backbone.py`` (any checkpoint
  format it reads, or ``random``: the suite's random-init control, seeded by ``--seed``, ``--arch``
  picks the size), written into the run folder in mmpose's format (``backbone_mmpose.pth``,
  verified by ``transfer/convert.py``) and loaded by mmpose's ``Pretrained`` init; after the
  Runner's weight init, every backbone tensor is compared with the opened backbone, because mmpose
  only warns when it loads nothing (a mis-prefixed file). The head's width follows the arch
  (``pretrain/backbones.py``). A small-image stem (3x3 conv1, no max-pool) is refused: mmpose's
  ResNet has no such stem.
- the protocol (RCL paper, Appendix D): ``fixed`` freezes the whole backbone (``frozen_stages=4``:
  no gradients; ``norm_eval``: BN statistics stay those of the checkpoint) and trains the head;
  after training every backbone tensor, BN buffers included, is checked to be unchanged.
  ``finetune`` trains everything.
- the schedule: the config's epochs become iterations of mmengine's ``IterBasedTrainLoop`` over an
  ``InfiniteSampler`` (the epoch loop's iterator sleeps 2 s at every epoch end, see
  ``mmengine/runner/loops.py``; the infinite sampler never ends an epoch). Epoch boundaries of the
  schedule (LR steps, validation, checkpoints) scale to the run's length, so ``--max-iters N``
  shortens the whole recipe to N iterations; the iteration warm-up is capped at a tenth of the run.
  The learning rate scales linearly with the real batch (``auto_scale_lr``: 5e-4 at batch 512).

Outputs in ``--out`` (default ``runs/mpii_pose/<name>``): the resolved config (dumped by the
Runner), mmengine's log and TensorBoard scalars (in a timestamped sub-folder), the last checkpoint,
``metrics.json`` and leaderboard rows (task ``mpii_pose``; metrics ``PCKh@0.5``, ``PCKh@0.1``,
``PCKh@0.5_head``, ``PCKh@0.5_shoulder``, ... one per mmpose joint group).

Several GPUs: ``--gpus 8`` starts the driver under torchrun with mmengine's ``pytorch`` launcher
(a free port), as ``torchrun --nproc_per_node 8 transfer/mpii_pose.py --launcher pytorch ...``
would; ``--batch-size`` is per GPU and the learning rate follows the total batch (mmpose's
``auto_scale_lr``: 5e-4 at 8 x 64). Without CUDA the processes join with gloo and the model is
wrapped in a DDP for CPU modules (how the multi-process path is tested).

``--eval-only --out RUN`` scores the run folder's last checkpoint again (``backbone.json`` there
says how to rebuild the model). After mmengine loads a Runner checkpoint (``--resume``,
``--eval-only``) every tensor of it must be in the model as written. ``metrics.json`` holds the
last validation (``metrics``; the leaderboard's rows) and the best one (``best``, by PCKh@0.5 as
mmpose's ``save_best='PCK'``, with its iteration).

``--resume`` (with the same flags) continues from the run folder's last Runner checkpoint (mmengine
first replays the data loader up to that iteration, for the same data order). Those files hold
numpy arrays and mmengine's log buffers, which torch >= 2.6 refuses with ``weights_only=True``
(mmengine 0.10 then fails to resume). They are read through a registered mmengine checkpoint
scheme with the suite's restricted unpickler (``pretrain/checkpoint.py``), widened by exactly
those types and nothing that could run code.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transfer.compat  # noqa: F401,I001  (before mmpose: registers the mmcv._ext placeholder)

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from benchmarks.results.leaderboard import (
    DEFAULT_PATH,
    LeaderboardError,
    backbone_fields,
    embedded_data,
    run_identity,
    write_rows,
)
from pretrain.backbones import RESNETS
from pretrain.checkpoint import RestrictedUnpickler
from pretrain.files import atomic_write
from pretrain.data import validate_mpii
from pretrain.cli import InputError, claim_output, keeping, number, one_line_errors, run_main
from pretrain.open_backbone import Backbone, add_backbone_arguments, open_backbone
from transfer.convert import export_backbone, mmpose_style

TASK = "mpii_pose"
BACKBONE_RECORD = "backbone.json"  # what --eval-only needs to rebuild the model
PROTOCOLS = ("fixed", "finetune")
RESUME_SCHEME = "suite-resume://"
BEST_KEY = "PCK"  # mmpose's save_best='PCK' (PCKh@0.5), rule 'greater'
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
FULL_CONFIG = CONFIG_DIR / "mpii_td-hm_res50_256x256.py"
CPU_CONFIG = CONFIG_DIR / "mpii_cpu_128x128.py"
# the published recipe's name (a leaderboard row's recipe); any other config is named by its file
RECIPES = {"mpii_td-hm_res50_256x256": "mpii-256x256-210e"}
# mmpose's MpiiPCKAccuracy keys -> leaderboard metric names
METRIC_NAMES = {"PCK": "PCKh@0.5", "PCK@0.1": "PCKh@0.1",
                **{f"{g} PCK": f"PCKh@0.5_{g.lower()}"
                   for g in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")}}


class MpiiPoseError(InputError):
    """Unusable input for the MPII driver; the message names the file or flag and the fix."""


# ----------------------------------------------------------------------------- backbone
def prepare_backbone(backbone: Backbone, out_dir: Path) -> Path:
    """Write ``backbone`` in mmpose's format into ``out_dir`` (verified in mmpose's ResNet,
    which refuses a small-image stem and any partial load); returns the file."""
    return export_backbone(backbone, "mmpose", out_dir / "backbone_mmpose.pth", verify=True)


def _backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _differences(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in expected.items()
            if k not in actual or actual[k].shape != v.shape
            or not torch.equal(actual[k].to(v.dtype), v)]


class BackboneGuard(Hook):
    """Fails the run when the backbone did not load (a fresh run: the converted file; after
    ``--resume`` or for ``--eval-only``: every tensor of the Runner checkpoint read), or
    (``fixed``) when training changed it; records the last and the best validation metrics (by
    mmpose's ``save_best`` key, PCKh@0.5) and the wall time of all validation passes."""

    priority = "VERY_HIGH"

    def __init__(self, backbone: Backbone | None, checkpoint: Path, frozen: bool,
                 runner_checkpoint: str | None = None) -> None:
        self.expected = {} if backbone is None else {
            k: v for k, v in backbone.model.state_dict().items()
            if not k.endswith("num_batches_tracked")}
        self.checkpoint, self.frozen = checkpoint, frozen
        self.runner_checkpoint = runner_checkpoint  # what --resume / --eval-only loads
        self.start: dict[str, torch.Tensor] = {}
        self.metrics: dict[str, float] = {}
        self.best: dict[str, Any] = {}
        self.val_seconds = self.val_start = 0.0

    def _check_runner_checkpoint(self, runner) -> None:
        """Every tensor of the Runner checkpoint is in the model as written (mmengine loads it
        with ``strict=False`` and only logs the rest)."""
        written = load_from_suite_resume(self.runner_checkpoint)["state_dict"]
        state = _unwrap(runner.model).state_dict()
        wrong = [k for k, v in written.items() if k not in state or state[k].shape != v.shape
                 or not torch.equal(state[k].detach().cpu(), v.to(state[k].dtype))]
        if wrong:
            raise MpiiPoseError(
                f"{self.runner_checkpoint[len(RESUME_SCHEME):]}: after mmengine loaded it, "
                f"{len(wrong)} of its {len(written)} tensors are not in the model as written "
                f"(e.g. {wrong[:3]}); mmengine only warns about this")

    def before_val(self, runner) -> None:
        if self.runner_checkpoint and not self.start:  # --eval-only: nothing trained here
            self._check_runner_checkpoint(runner)

    def before_train(self, runner) -> None:
        backbone = _unwrap(runner.model).backbone
        self.start = _backbone_state(backbone)
        if self.runner_checkpoint:  # resumed: it holds the run's weights, not the file's
            self._check_runner_checkpoint(runner)
            return
        wrong = _differences(self.start, self.expected)
        missing = [k for k in self.start if k not in self.expected
                   and not k.endswith("num_batches_tracked")]
        if wrong or missing:
            raise MpiiPoseError(
                f"the backbone was not loaded from {self.checkpoint}: {len(wrong)} tensors differ "
                f"(e.g. {wrong[:3]}), {len(missing)} absent from the file (e.g. {missing[:3]}); "
                "mmpose only warns about this. Check --prefix and the checkpoint's keys")

    def after_train(self, runner) -> None:
        if not self.frozen:
            return
        changed = _differences(_backbone_state(_unwrap(runner.model).backbone), self.start)
        if changed:
            raise MpiiPoseError(f"protocol 'fixed' but training changed {len(changed)} backbone "
                                f"tensors (e.g. {changed[:3]}): the backbone was not frozen")

    def before_val_epoch(self, runner) -> None:
        self.val_start = time.perf_counter()

    def after_val_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        self.metrics = dict(metrics or {})
        self.val_seconds += time.perf_counter() - self.val_start
        score = {k.split("/")[-1]: v for k, v in self.metrics.items()}.get(BEST_KEY)
        if score is not None and (not self.best or score > self.best["score"]):
            self.best = {"score": float(score), "iteration": runner.iter,
                         "metrics": dict(self.metrics)}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


# ----------------------------------------------------------------------------- config
def build_config(config: Path, *, data_root: Path, backbone_file: Path, arch: str, protocol: str,
                 out_dir: Path, n_train: int, max_iters: int | None = None,
                 batch_size: int | None = None, val_images: int | None = None, seed: int = 0,
                 launcher: str = "none", resume: bool = False, style: str = "pytorch") -> Config:
    """The mmengine config of one run: ``config`` plus backbone, protocol, data and schedule."""
    if protocol not in PROTOCOLS:
        raise MpiiPoseError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(out_dir)
    cfg.launcher = launcher
    if resume:
        cfg.resume, cfg.load_from = True, resume_checkpoint(Path(out_dir))
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


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class MpiiPoseConfig:
    """One run's settings, parsed from the command line by :func:`parse_args`; never changed
    (what it leaves unset, data root, config and run folder, :func:`run` derives)."""

    weights: str | None
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
    seed: int = 0
    leaderboard: Path = DEFAULT_PATH
    launcher: str = "none"
    resume: bool = False
    eval_only: bool = False
    gpus: int = 1


# ----------------------------------------------------------------------------- run
def run(settings: MpiiPoseConfig) -> dict[str, Any]:
    """Train and score one backbone; write metrics.json and leaderboard rows. Returns the record."""
    from mmengine.dist import is_main_process

    # everything mmpose will read, checked up front (pretrain/data.py)
    data, sizes = validate_mpii(settings.data or _default_data())
    config = settings.config or (FULL_CONFIG if settings.data else CPU_CONFIG)
    if not config.is_file():
        raise MpiiPoseError(f"--config {config}: no such file")
    if not config.resolve().is_relative_to(CONFIG_DIR):
        # mmengine runs a config's Python (and reads its YAML with the full loader) to load it.
        raise MpiiPoseError(f"--config {config}: mmengine configs execute code when loaded, so "
                            f"only those in {CONFIG_DIR} are loaded; review it and copy it there")
    if settings.eval_only:
        return evaluate(settings, data, sizes["train"], config)
    backbone = open_backbone(settings.weights, settings.arch, settings.stem, settings.seed,
                             settings.prefix, settings.stride_in_1x1)
    protocol = settings.protocol
    out = run_folder(settings, backbone)
    claim_output(out, f"transfer/mpii_pose.py {protocol}",
                 own=lambda folder: (folder / "backbone_mmpose.pth").is_file())

    backbone_file = prepare_backbone(backbone, out)
    arch, style = backbone.meta["arch"], mmpose_style(backbone.meta)
    fields = backbone_fields(backbone.weights, backbone.meta)
    if is_main_process():
        atomic_write(out / BACKBONE_RECORD, lambda f: f.write(json.dumps(
            {"weights": settings.weights, "arch": arch, "style": style, "protocol": protocol,
             "backbone": fields}, indent=2).encode()))
    cfg = build_config(config, data_root=data, backbone_file=backbone_file, arch=arch,
                       protocol=protocol, out_dir=out, n_train=sizes["train"],
                       max_iters=settings.max_iters, batch_size=settings.batch_size,
                       val_images=settings.val_images, seed=settings.seed,
                       launcher=settings.launcher, resume=settings.resume, style=style)
    runner = _runner(cfg)
    guard = BackboneGuard(backbone, backbone_file, frozen=protocol == "fixed",
                          runner_checkpoint=cfg.load_from if settings.resume else None)
    runner.register_hook(guard, "VERY_HIGH")
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    return _report(settings, runner, cfg, guard, seconds, {
        "weights": settings.weights, "backbone_file": str(backbone_file), "arch": arch,
        "data": str(data), "config": str(config), "protocol": protocol, "backbone": fields})


def evaluate(settings: MpiiPoseConfig, data: Path, n_train: int, config: Path) -> dict[str, Any]:
    """``--eval-only``: the run folder's last Runner checkpoint, loaded (every tensor checked)
    and scored on the val set."""
    out = run_folder(settings, None)
    record_file = out / BACKBONE_RECORD
    if not record_file.is_file():
        raise MpiiPoseError(f"--eval-only: {out} holds no run of this driver ({record_file} is "
                            "missing); pass the training run's --out")
    record = json.loads(record_file.read_text())
    cfg = build_config(config, data_root=data, backbone_file=out / "backbone_mmpose.pth",
                       arch=record["arch"], protocol=record["protocol"], out_dir=out,
                       n_train=n_train, max_iters=settings.max_iters,
                       batch_size=settings.batch_size, val_images=settings.val_images,
                       seed=settings.seed, launcher=settings.launcher, style=record["style"])
    cfg.load_from, cfg.resume = resume_checkpoint(out, "--eval-only"), False
    runner = _runner(cfg)
    guard = BackboneGuard(None, out / "backbone_mmpose.pth", frozen=False,
                          runner_checkpoint=cfg.load_from)
    runner.register_hook(guard, "VERY_HIGH")
    runner.val()
    return _report(settings, runner, cfg, guard, 0.0, {
        **record, "data": str(data), "config": str(config), "eval_only": True,
        "checkpoint": cfg.load_from[len(RESUME_SCHEME):]})


def run_folder(settings: MpiiPoseConfig, backbone: Backbone | None) -> Path:
    """``--out``, or ``runs/mpii_pose/<name>``: ``--name``, or the backbone and protocol."""
    if settings.out or settings.name:
        return settings.out or Path("runs") / TASK / settings.name
    if backbone is None:
        raise MpiiPoseError("--eval-only needs the training run's folder: pass --out DIR")
    protocol = settings.protocol
    return Path("runs") / TASK / (f"{backbone.meta['backbone_id']}-{protocol}"
                                  if backbone.weights is None else
                                  f"{backbone.weights.stem}-{backbone.key[:8]}-{protocol}")


def _runner(cfg: Config):
    """mmengine's Runner of ``cfg``; under torchrun on a machine without CUDA the process group
    is joined here with gloo and the model wrapped in a DDP that takes CPU modules (mmengine's
    launcher would call ``torch.cuda.set_device`` and pass ``device_ids``)."""
    from mmengine.runner import Runner

    if cfg.launcher == "pytorch" and not torch.cuda.is_available():
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        cfg.model_wrapper_cfg = dict(type=_cpu_ddp())
    return Runner.from_cfg(cfg)


def _cpu_ddp() -> str:
    """Register (once) mmengine's DDP wrapper for CPU modules; returns its registry name."""
    from mmengine.model import MMDistributedDataParallel
    from mmengine.registry import MODEL_WRAPPERS

    name = "CpuDistributedDataParallel"
    if MODEL_WRAPPERS.get(name) is None:
        @MODEL_WRAPPERS.register_module(name=name)
        class CpuDistributedDataParallel(MMDistributedDataParallel):
            """MMDistributedDataParallel without ``device_ids`` (torch refuses them for a CPU
            module)."""

            def __init__(self, module: torch.nn.Module, device_ids: Any = None,
                         **kwargs: Any) -> None:
                super().__init__(module=module, **kwargs)
    return name


def _report(settings: MpiiPoseConfig, runner, cfg: Config, guard: BackboneGuard,
            seconds: float, about: dict[str, Any]) -> dict[str, Any]:
    """metrics.json (last and best validation) and the leaderboard rows of the last one."""
    from mmengine.dist import is_main_process

    if not guard.metrics:
        raise MpiiPoseError("training ended without a validation pass; no PCKh to report")

    def named(metrics: dict[str, float]) -> dict[str, float]:
        return {METRIC_NAMES[k.split("/")[-1]]: float(v) for k, v in metrics.items()
                if k.split("/")[-1] in METRIC_NAMES}

    metrics = named(guard.metrics)
    batch = cfg.train_dataloader.batch_size * runner.world_size
    group = runner.optim_wrapper.optimizer.param_groups[0] if not about.get("eval_only") else {}
    out = Path(cfg.work_dir)
    record = {
        "task": TASK, **{k: v for k, v in about.items() if k != "backbone"},
        "work_dir": str(out), "log_dir": str(runner.log_dir),
        "iterations": cfg.train_cfg["max_iters"], "batch_size": batch,
        "world_size": runner.world_size, "seed": settings.seed,
        "val_images": settings.val_images or "all",
        "lr": group.get("initial_lr", group.get("lr")),  # after auto_scale_lr, before schedules
        "train_seconds": None if about.get("eval_only") else round(seconds - guard.val_seconds, 1),
        "eval_seconds": round(guard.val_seconds, 1),
        "metrics": metrics,
        "best": ({"iteration": guard.best["iteration"], "metrics": named(guard.best["metrics"])}
                 if guard.best else None),
        "mmpose_metrics": {k: float(v) for k, v in guard.metrics.items()},
        "backbone": about["backbone"],
    }
    if is_main_process():
        atomic_write(out / "metrics.json",
                     lambda f: f.write(json.dumps(record, indent=2).encode()))
        recipe = Path(about["config"]).stem
        identity = run_identity(RECIPES.get(recipe, recipe), {
            "data": "synthetic" if embedded_data(Path(about["data"])) else None,
            "iterations": settings.max_iters, "batch_size": settings.batch_size,
            "val_images": settings.val_images}, published=recipe in RECIPES)
        base = {**record["backbone"], "task": TASK, "protocol": about["protocol"], **identity,
                "seed": settings.seed}
        with keeping(out / "metrics.json"):
            write_rows(settings.leaderboard, [{**base, "metric": m, "value": v}
                                              for m, v in metrics.items()])
    return record


def _default_data() -> Path:
    from pretrain.synthetic import default_root

    return default_root("default") / "mpii"


# The globals a Runner checkpoint of this driver holds beyond numpy arrays/scalars (log values,
# dataset meta): tensors, Counter (MultiStepLR milestones) and mmengine's HistoryBuffer (log
# smoothing), whose statistics methods are pickled as getattr(HistoryBuffer, name).
_RESUME_GLOBALS = frozenset({
    ("torch._utils", "_rebuild_tensor_v2"), ("collections", "Counter"),
    ("mmengine.logging.history_buffer", "HistoryBuffer"),
})


def _history_buffer_method(owner: type, name: str) -> Any:
    """The only ``getattr`` a resumed checkpoint may call: a HistoryBuffer statistics method."""
    from mmengine.logging import HistoryBuffer

    allowed = {"min", "max", "mean", "current", *HistoryBuffer._statistics_methods}
    if owner is not HistoryBuffer or name not in allowed:
        raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not allowed")
    return getattr(HistoryBuffer, name)


class _RunnerCheckpointUnpickler(RestrictedUnpickler):
    """Reads a Runner checkpoint admitting only the suite's array types and ``_RESUME_GLOBALS``
    (torch >= 2.6's ``weights_only`` loader refuses these files; ``weights_only=False`` would run
    any code)."""

    ALLOWED = RestrictedUnpickler.ALLOWED | _RESUME_GLOBALS
    REPLACED = {("builtins", "getattr"): _history_buffer_method,
                ("__builtin__", "getattr"): _history_buffer_method}


def load_from_suite_resume(filename: str, map_location: Any = None) -> dict:
    # mmengine logs the scheme's name as this function's name minus 'load_from_'
    path = filename[len(RESUME_SCHEME):]
    try:
        return torch.load(path, map_location=map_location, weights_only=False,
                          pickle_module=_RunnerCheckpointUnpickler.pickle_module())
    except pickle.UnpicklingError as err:
        raise MpiiPoseError(f"--resume: {path} holds objects this driver does not resume from "
                            f"({err}); only Runner checkpoints written by transfer/mpii_pose.py "
                            "are read") from err


def resume_checkpoint(out_dir: Path, flag: str = "--resume") -> str:
    """The run folder's last Runner checkpoint, as a path mmengine reads with the restricted
    loader above."""
    from mmengine.runner import CheckpointLoader

    last = out_dir / "last_checkpoint"  # written by mmengine's CheckpointHook
    if not last.is_file():
        raise MpiiPoseError(f"{flag}: {out_dir} has no checkpoint to "
                            f"{'resume from' if flag == '--resume' else 'evaluate'} "
                            f"({last} is missing); run without {flag}")
    path = Path(last.read_text().strip())
    if not path.is_file():
        raise MpiiPoseError(f"{flag}: {last} names {path}, which does not exist")
    CheckpointLoader.register_scheme(RESUME_SCHEME, load_from_suite_resume, force=True)
    return RESUME_SCHEME + str(path)


def parse_args(argv: list[str] | None = None) -> MpiiPoseConfig:
    """The command line, checked, as the run's :class:`MpiiPoseConfig`."""
    p = one_line_errors(argparse.ArgumentParser(
        prog="python transfer/mpii_pose.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter))
    add_backbone_arguments(p)
    p.add_argument("--protocol", choices=PROTOCOLS, default="fixed",
                   help="fixed: frozen backbone (BN in eval), train the head; finetune: train all")
    p.add_argument("--data", type=Path, help="MPII root in mmpose's layout; default: the embedded "
                                  "synthetic set (generated on first use)")
    p.add_argument("--out", type=Path, help="run folder; default runs/mpii_pose/<name>, name = "
                                 "<weights' stem>-<8 hex of its hash>-<protocol>")
    p.add_argument("--name", help="run name under runs/mpii_pose when --out is not given")
    p.add_argument("--max-iters", type=number(),
                   help="train N iterations, the whole schedule scaled to fit")
    p.add_argument("--batch-size", type=number(), help="per-process batch (lr follows the total)")
    p.add_argument("--val-images", type=number(), metavar="N",
                   help="evaluate on the first N val people only (a quick check; the protocol "
                        "evaluates all)")
    p.add_argument("--config", type=Path,
                   help="mmengine config, from transfer/configs/ only (loading one runs its "
                        "code); default configs/mpii_cpu_128x128.py without --data, "
                        "configs/mpii_td-hm_res50_256x256.py with")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the run (and of the random-init control)")
    p.add_argument("--leaderboard", type=Path, default=DEFAULT_PATH,
                   help="leaderboard CSV to update")
    p.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"), default="none",
                   help="mmengine's distributed launcher (pytorch: under torchrun)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in the run folder")
    p.add_argument("--eval-only", action="store_true",
                   help="score the run folder's last checkpoint (--out of the training run)")
    p.add_argument("--gpus", type=number(), default=1,
                   help="processes (one per GPU; gloo processes on a CPU): with N > 1 the driver "
                        "starts itself under torchrun with --launcher pytorch")
    args = p.parse_args(argv)
    if args.weights is None and not args.eval_only:
        p.error("--weights is required (a backbone checkpoint, or 'random')")
    if args.gpus > 1 and args.launcher != "none":
        p.error("--gpus starts torchrun itself; under a launcher of your own pass --launcher "
                "and not --gpus")
    return MpiiPoseConfig(**vars(args))


def torchrun_command(argv: list[str], gpus: int) -> list[str]:
    """This driver under torchrun: ``gpus`` processes on this machine, mmengine's ``pytorch``
    launcher, a free port (two runs on one machine must not collide)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kept, skip = [], False
    for arg in argv:  # every flag but --gpus
        if skip or arg.startswith("--gpus="):
            skip = False
            continue
        skip = arg == "--gpus"
        if not skip:
            kept.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus),
            "--master_addr", "127.0.0.1", "--master_port", str(port),
            str(Path(__file__).resolve()), *kept, "--launcher", "pytorch"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    code = 0

    def train_and_score() -> None:
        nonlocal code
        settings = parse_args(argv)
        if settings.gpus > 1:
            import subprocess

            code = subprocess.call(torchrun_command(argv, settings.gpus))
            return
        record = run(settings)
        if os.environ.get("RANK", "0") != "0":  # under torchrun: one summary
            return
        print(json.dumps({k: record[k] for k in ("metrics", "best", "world_size", "batch_size",
                                                 "lr", "train_seconds", "eval_seconds")},
                         indent=2))

    return run_main(train_and_score, statuses={LeaderboardError: 2}) or code


if __name__ == "__main__":
    sys.exit(main())
