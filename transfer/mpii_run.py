"""One MPII run: the backbone written for mmpose, mmengine's Runner trained and scored, the
outputs recorded (:mod:`transfer.mpii_pose` is its command line).

Outputs in the run folder: the converted backbone (``backbone_mmpose.pth``, verified by
``transfer/convert.py``) and ``backbone.json`` (what ``--eval-only`` needs to rebuild the model),
the resolved config (dumped by the Runner), mmengine's log and TensorBoard scalars (in a
timestamped sub-folder), the last checkpoint, ``metrics.json`` (the last validation,
``metrics``: the leaderboard's rows, and the best one, ``best``, by PCKh@0.5 as mmpose's
``save_best='PCK'``, with its iteration) and leaderboard rows (task ``mpii_pose``; metrics
``PCKh@0.5``, ``PCKh@0.1``, ``PCKh@0.5_head``, ... one per mmpose joint group).

Under torchrun on a machine without CUDA the processes join with gloo and the model is wrapped
in a DDP for CPU modules (how the multi-process path is tested).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config

from benchmarks.results.leaderboard import backbone_fields, embedded_data, run_identity, write_rows
from pretrain.cli import claim_output, keeping
from pretrain.data import validate_mpii
from pretrain.files import atomic_write
from pretrain.open_backbone import Backbone, open_backbone
from transfer.convert import export_backbone, mmpose_style
from transfer.mpii_checkpoint import checkpoint_path, resume_checkpoint
from transfer.mpii_config import (
    CPU_CONFIG,
    FULL_CONFIG,
    MpiiPoseConfig,
    MpiiPoseError,
    build_config,
    read_config,
)
from transfer.mpii_guard import BackboneGuard

TASK = "mpii_pose"
BACKBONE_RECORD = "backbone.json"  # what --eval-only needs to rebuild the model
# the published recipe's name (a leaderboard row's recipe); any other config is named by its file
RECIPES = {"mpii_td-hm_res50_256x256": "mpii-256x256-210e"}
# mmpose's MpiiPCKAccuracy keys -> leaderboard metric names
METRIC_NAMES = {"PCK": "PCKh@0.5", "PCK@0.1": "PCKh@0.1",
                **{f"{g} PCK": f"PCKh@0.5_{g.lower()}"
                   for g in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")}}


def prepare_backbone(backbone: Backbone, out_dir: Path) -> Path:
    """Write ``backbone`` in mmpose's format into ``out_dir`` (verified in mmpose's ResNet,
    which refuses a small-image stem and any partial load); returns the file."""
    return export_backbone(backbone, "mmpose", out_dir / "backbone_mmpose.pth", verify=True)


def run(settings: MpiiPoseConfig) -> dict[str, Any]:
    """Train and score one backbone; write metrics.json and leaderboard rows. Returns the record."""
    from mmengine.dist import is_main_process

    # everything mmpose will read, checked up front (pretrain/data.py)
    data, sizes = validate_mpii(settings.data or _default_data())
    config = settings.config or (FULL_CONFIG if settings.data else CPU_CONFIG)
    cfg = read_config(config, settings.cfg_options)
    if settings.eval_only:
        return evaluate(settings, data, sizes["train"], config, cfg)
    backbone = open_backbone(settings.weights, settings.arch, settings.stem, settings.seed,
                             settings.prefix, settings.stride_in_1x1)
    protocol = settings.protocol
    out = run_folder(settings, backbone)
    claim_output(out, f"transfer/mpii_pose.py {protocol}",
                 own=lambda folder: (folder / "backbone_mmpose.pth").is_file())

    backbone_file = prepare_backbone(backbone, out)
    arch, style = backbone.meta["arch"], mmpose_style(backbone.meta)
    fields = backbone_fields(backbone.weights, backbone.meta, name=settings.backbone_name)
    if is_main_process():
        atomic_write(out / BACKBONE_RECORD, lambda f: f.write(json.dumps(
            {"weights": settings.weights, "arch": arch, "style": style, "protocol": protocol,
             "backbone": fields}, indent=2).encode()))
    cfg = build_config(cfg, data_root=data, backbone_file=backbone_file, arch=arch,
                       protocol=protocol, out_dir=out, n_train=sizes["train"],
                       max_iters=settings.max_iters, batch_size=settings.batch_size,
                       val_images=settings.val_images, seed=settings.seed,
                       launcher=settings.launcher, style=style,
                       resume_from=resume_checkpoint(out) if settings.resume else None)
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


def evaluate(settings: MpiiPoseConfig, data: Path, n_train: int, config: Path,
             cfg: Config) -> dict[str, Any]:
    """``--eval-only``: the run folder's last Runner checkpoint, loaded (every tensor checked)
    and scored on the val set."""
    out = run_folder(settings, None)
    record_file = out / BACKBONE_RECORD
    if not record_file.is_file():
        raise MpiiPoseError(f"--eval-only: {out} holds no run of this driver ({record_file} is "
                            "missing); pass the training run's --out")
    record = json.loads(record_file.read_text())
    cfg = build_config(cfg, data_root=data, backbone_file=out / "backbone_mmpose.pth",
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
        "checkpoint": checkpoint_path(cfg.load_from)})


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
