"""The one training loop for every method x regularizer: CPU, one GPU, or DDP under torchrun.

    python -m pretrain.train --method simclr --steps 50          # (tools/pretrain.sh wraps this)

Run folder ``<out>/<name>/``: ``config.yaml`` (resolved), ``log.txt``, ``tb/`` (TensorBoard),
``last_state.pt`` (resume), ``backbone.safetensors`` (the suite's backbone checkpoint),
``metrics.json``. ``--resume RUN_DIR`` continues exactly: the sampler is a seeded permutation per
epoch, each item's augmentation is seeded by (seed, epoch, index), and the state holds the model
(EMA target, queue), optimizer, regularizer, RNG states and step; the schedule is a function of
the step. On the CPU an interrupted-and-resumed run ends with the same parameters as an
uninterrupted one. A non-finite loss stops the run before the update, naming the step and the last
good checkpoint.

Regularizer hooks (contract; base class with no-op defaults: ``pretrain.methods.base.Regularizer``,
registry: ``pretrain.regularizers.REGULARIZERS[name](method, cfg)``, options in
``cfg.regularizer_args``). One regular step is::

    reg.set_schedule(steps_per_epoch, total_steps)           # (e) once, before the first step
    batch = {"x1", "x2", "plain"}   # views; "plain" = un-augmented resized image if needs_plain
    out = model(x1, x2, feature_mask=reg.feature_mask)      # (b) mask on the pooled features h
    loss, terms = reg.regularize(out["loss"], method, batch, out, progress)   # (a) extra loss
    loss.backward(); <average reg.joint_parameters() grads over ranks>; optimizer.step()
    method.after_step(out, progress)                         # EMA target / queue
    if reg.meta_due(step):                                   # (f) every meta_every-th step
        reg.meta_step(method, batch, optimizer, lr, step)    # (d) meta step

(the regular part runs when ``reg.regular_due(step)``, hook f: a schedule alternating epochs of
regular and meta steps skips it; a step with only a meta step logs the meta step's inner loss).

- ``out`` holds fmap1/fmap2 (res5 maps), h1/h2 (pooled features), z1/z2 (projections) and the
  method's own tensors; ``method.encode(x)`` runs the online backbone on anything else (e.g. a
  masked view). ``regularize`` runs under the same autocast as the forward.
- (c) extra modules are submodules of the regularizer: ``reg.state_dict()`` and
  ``reg.meta_optimizer`` are saved and restored with the training state. ``joint_parameters()``
  are trained by the main optimizer (same schedule); other parameters belong to the meta step.
- (d) ``meta_step`` gets the unwrapped method (not the DDP wrapper): recompute the loss with
  ``torch.func.functional_call(method, params, (x1, x2))["loss"]`` (see
  ``pretrain/regularizers/virtual_step.py``). Take meta gradients with ``torch.autograd.grad`` or
  ``backward(inputs=meta_params)`` and zero them yourself: a bare ``backward()`` would write into
  the model's ``.grad`` (and DDP's reducer). The loop zeroes only the main optimizer's gradients.
  It runs after ``optimizer.step()``: the optimizer's state already holds this step, and its
  param groups' ``lr`` is this step's (``lr``).
- (e) ``set_schedule`` gives the run's length (steps per epoch, total steps), e.g. for a warm-up
  in epochs; ``progress`` in (a) is steps done / total steps.
- (g) ``reg.regular_optimizer()`` may name the optimizer the regular step trains with (MetaMask's
  official one) instead of the method's, unless ``--optimizer``, ``--lr`` or ``--weight-decay``
  is given; ``reg.bind_optimizer(optimizer)`` is called once it is built, before a resumed state
  loads.
- (h) ``reg.backbone_metadata()`` is saved in the backbone checkpoint's metadata (MetaMask's mask).
- Under DDP the regularizer's BatchNorm layers normalise over the global batch
  (:mod:`pretrain.global_norm`), as do the method's with ``--sync-bn``, so W ranks compute one
  process's losses.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from pretrain import distributed as D
from pretrain.augment import AugmentSpec
from pretrain.backbones import FEATURE_DIMS, build_resnet
from pretrain.checkpoint import first_non_finite, save_backbone
from pretrain.cli import OutputError, claim_output, run_main, torchrun_command
from pretrain.config import (
    ConfigError,
    PretrainConfig,
    build_parser,
    parse_args,
    resolve,
    save_yaml,
)
from pretrain.device_augment import InputPipeline
from pretrain.files import atomic_write, git_commit
from pretrain.global_norm import global_batch_norm
from pretrain.methods import METHODS, Method, Regularizer, build_method
from pretrain.optim import build_optimizer, set_lr, warmup_cosine
from pretrain.run_state import STATE_FILE, restore_training_state, save_training_state

BACKBONE_FILE = "backbone.safetensors"
DEFAULT_RUNS = Path("runs/pretrain")  # where a run without --out goes, as runs/pretrain/<name>


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


class EpochBatches(Sampler[int]):
    """Sample indices of this rank's share of each global batch of one epoch.

    The epoch's order is ``randperm(n)`` seeded by (seed, epoch); global batch ``b`` is
    ``order[b*B:(b+1)*B]`` and rank ``r`` takes its ``r``-th slice, so W ranks together see exactly
    the batches of a single process. ``start`` skips the batches already done (resume).
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int, world: int) -> None:
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.local_batch = rank, global_batch // world
        self.epoch, self.start = 0, 0

    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(
            self.seed * 100_003 + self.epoch)).tolist()
        for b in range(self.start, self.batches_per_epoch()):
            first = b * self.global_batch + self.rank * self.local_batch
            yield from order[first:first + self.local_batch]

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start) * self.local_batch


def build_regularizer(cfg: PretrainConfig, method: Method) -> Regularizer:
    if cfg.regularizer == "none":
        return Regularizer(method, cfg)
    try:
        from pretrain.regularizers import REGULARIZERS
    except ImportError as err:
        raise ConfigError(f"--regularizer {cfg.regularizer}: no regularizer registry "
                          f"(pretrain/regularizers/__init__.py: {err})") from err
    if cfg.regularizer not in REGULARIZERS:
        raise ConfigError(f"unknown --regularizer {cfg.regularizer!r}; choose none or one of "
                          f"{', '.join(REGULARIZERS)}")
    return REGULARIZERS[cfg.regularizer](method, cfg)


def training_step(model: nn.Module, method: Method, regularizer: Regularizer,
                  optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], step: int,
                  progress: float, lr: float, amp: bool) -> tuple[float, dict[str, float]]:
    """One regular step (+ the regularizer's meta step when due): (loss, scalars to log).

    ``model`` is ``method`` or its DDP wrapper. A non-finite loss raises before any update.
    """
    logs: dict[str, float] = {}
    loss_value = None
    if regularizer.regular_due(step):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(batch["x1"], batch["x2"], feature_mask=regularizer.feature_mask)
            loss, terms = regularizer.regularize(out["loss"], method, batch, out, progress)
        loss_value = D.mean_over_ranks(loss.float()).item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"loss is {loss_value} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        D.average_gradients(regularizer.joint_parameters())
        optimizer.step()
        method.after_step(out, progress)
        logs = {k: float(v) for k, v in terms.items()}
    if regularizer.meta_due(step):  # after optimizer.step(): the virtual step is the next one
        logs.update(regularizer.meta_step(method, batch, optimizer, lr, step))
    if loss_value is None:  # a meta-only step: its inner loss is the regular objective
        loss_value = D.mean_over_ranks(torch.tensor(logs["meta_inner"])).item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"loss is {loss_value} at step {step}")
    return loss_value, logs


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def make_logger(run_dir: Path | None) -> logging.Logger:
    logger = logging.getLogger(f"pretrain.run.{run_dir}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if run_dir is not None:
        fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
        for handler in (logging.FileHandler(run_dir / "log.txt"), _TqdmHandler()):
            handler.setFormatter(fmt)
            logger.addHandler(handler)
    return logger


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible; use --device cpu")
    return requested


def prepare_run_dir(cfg: PretrainConfig, resume: str | None) -> Path:
    """The run folder (rank 0 decides; every rank gets the same path)."""
    if resume is not None:
        path = Path(resume)
        run_dir = path if path.is_dir() else path.parent
        if not (run_dir / STATE_FILE).is_file():
            raise ConfigError(f"--resume {resume}: no {STATE_FILE} in {run_dir}")
        return run_dir
    if cfg.out and cfg.name:
        raise ConfigError(f"--out is the run folder and --name a run under {DEFAULT_RUNS}: pass "
                          f"one (--out {Path(cfg.out) / cfg.name} for what both meant before)")
    run_dir = Path(cfg.out) if cfg.out else DEFAULT_RUNS / (cfg.name or "-".join(
        [cfg.method] + ([cfg.regularizer] if cfg.regularizer != "none" else [])
        + [cfg.data, cfg.arch, time.strftime("%Y%m%d-%H%M%S")]))
    error = (f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
             "another --out") if (run_dir / STATE_FILE).exists() else None
    if error is None and D.rank() == 0:  # a folder holding another command's outputs is refused
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            claim_output(run_dir, "pretrain/train.py")
        except OutputError as err:
            error = str(err)
    decision = [run_dir, error]
    if D.is_distributed():  # rank 0's clock and file system decide for every rank
        torch.distributed.broadcast_object_list(decision, src=0)
    if decision[1] is not None:
        raise ConfigError(decision[1])
    return decision[0]


def train(cfg: PretrainConfig, resume: str | None = None) -> Path:
    """Run one pretraining; returns the run folder."""
    device = pick_device(cfg.device)
    D.init_from_env(device)
    if device.startswith("cuda") and D.is_distributed():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if cfg.method not in METHODS:
        raise ConfigError(f"unknown --method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    recipe_given = any(v is not None for v in (cfg.optimizer, cfg.lr, cfg.weight_decay))
    cfg = resolve(cfg, device.split(":")[0], METHODS[cfg.method].DEFAULTS)
    rank, world = D.rank(), D.world_size()
    if cfg.batch_size % world:
        raise ConfigError(f"--batch-size {cfg.batch_size} must be divisible by the number of "
                          f"processes ({world})")
    cuda = device.startswith("cuda")
    seed_everything(cfg.seed)
    # built before the run folder: a bad --method-arg or --regularizer-arg leaves no folder
    method = build_method(cfg.method, build_resnet(cfg.arch, cfg.stem), FEATURE_DIMS[cfg.arch],
                          **cfg.method_args)
    regularizer = build_regularizer(cfg, method)
    own_optimizer = regularizer.regular_optimizer()
    if own_optimizer is not None and not recipe_given:  # config.yaml records it (lr per 256)
        name, lr, weight_decay, momentum = own_optimizer
        cfg = dataclasses.replace(cfg, optimizer=name, lr=lr * 256 / cfg.batch_size,
                                  weight_decay=weight_decay, momentum=momentum)
    run_dir = prepare_run_dir(cfg, resume)
    cfg = dataclasses.replace(cfg, out=str(run_dir), name=None)  # config.yaml names its folder
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    log = make_logger(run_dir if rank == 0 else None)
    pipeline = InputPipeline(AugmentSpec.for_data(cfg.data, cfg.image_size), cfg.augment_on,
                             with_plain=regularizer.needs_plain, device=device)
    dataset = pipeline.dataset(cfg.data, cfg.data_root, cfg.seed)
    sampler = EpochBatches(len(dataset), cfg.batch_size, cfg.seed, rank, world)
    steps_per_epoch = sampler.batches_per_epoch()
    if steps_per_epoch == 0:
        raise ConfigError(f"the {cfg.data} data set has {len(dataset)} images, fewer than one "
                          f"batch of {cfg.batch_size}; lower --batch-size")
    total_steps = cfg.steps or max(1, round(cfg.epochs * steps_per_epoch))
    warmup_steps = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps // 10)
    peak_lr = cfg.lr * cfg.batch_size / 256
    regularizer.set_schedule(steps_per_epoch, total_steps)

    method.to(device)
    regularizer.to(device)
    if cuda and cfg.amp:
        method.to(memory_format=torch.channels_last)
    if world > 1:
        method, regularizer = global_batch_norm(method, regularizer, cuda, cfg.sync_bn)
    model: nn.Module = method
    if D.launched():  # under torchrun, one process included
        model = nn.parallel.DistributedDataParallel(
            method, device_ids=[torch.device(device)] if cuda else None)
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optimizer, trainable + regularizer.joint_parameters(),
                                peak_lr, cfg.weight_decay, cfg.momentum)
    regularizer.bind_optimizer(optimizer)

    state_path = run_dir / STATE_FILE
    start_step, history = 0, []
    if resume is not None:
        start_step, history = restore_training_state(state_path, method, optimizer, regularizer,
                                                     total_steps)
        log.info(f"resumed {run_dir} at step {start_step}")
    if rank == 0:  # after a resumed state has loaded: a failed resume leaves config.yaml as it was
        save_yaml(cfg, run_dir / "config.yaml")
    last_good = str(state_path) if resume is not None else None

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))
        log.info(f"{cfg.method} + {cfg.regularizer} on {cfg.data} "
                 f"({cfg.data_root or 'embedded synthetic default'}, {len(dataset)} images), "
                 f"{cfg.arch}/{cfg.stem} stem at {cfg.image_size} px, batch {cfg.batch_size} on "
                 f"{world} x {device}, {total_steps} steps ({steps_per_epoch}/epoch), "
                 f"{cfg.optimizer} peak lr {peak_lr:.4g}, warm-up {warmup_steps} steps; "
                 f"{pipeline.describe()}")
    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=start_step, disable=rank != 0, desc="pretrain",
               dynamic_ncols=True)
    memory_format = torch.channels_last if cuda and cfg.amp else torch.contiguous_format
    step, loader_iter, started, images = start_step, None, time.perf_counter(), 0
    model.train()
    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        if loader_iter is None or in_epoch == 0:
            sampler.set_position(epoch, in_epoch)
            dataset.epoch = epoch
            # Own generator: creating an iterator must not draw from the global RNG (a resumed
            # run creates one more than an uninterrupted run).
            loader_iter = iter(DataLoader(dataset, batch_size=sampler.local_batch, sampler=sampler,
                                          num_workers=cfg.workers, pin_memory=cuda,
                                          drop_last=True, generator=torch.Generator(),
                                          collate_fn=pipeline.collate))
        batch = pipeline.to_device(next(loader_iter), memory_format)
        if step == start_step and pipeline.compile_s is not None:
            log.info(f"torch.compile of the batched augmentation took {pipeline.compile_s:.1f} s")
        lr = warmup_cosine(step, total_steps, warmup_steps, peak_lr)
        set_lr(optimizer, lr)
        try:
            loss_value, logs = training_step(model, method, regularizer, optimizer, batch, step,
                                             step / total_steps, lr, amp=cuda and cfg.amp)
        except NonFiniteLossError as err:
            message = f"{err}; last good checkpoint: {last_good or 'none written yet'}"
            log.error(message)
            raise NonFiniteLossError(message) from None
        step += 1
        images += cfg.batch_size
        bar.update(1)
        if step % cfg.log_every == 0 or step == total_steps:
            scalars = {"loss": loss_value, "lr": lr, **logs}
            history.append({"step": step, **scalars})
            if writer is not None:
                for key, value in scalars.items():
                    writer.add_scalar(f"train/{key}", value, step)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.3g}")
                log.info(f"step {step}/{total_steps} " + " ".join(
                    f"{k} {v:.5g}" for k, v in scalars.items()))
        if rank == 0 and (step % cfg.save_every == 0 or step == total_steps):
            non_finite = first_non_finite(method.state_dict())
            if non_finite:  # e.g. a huge learning rate: the loss was finite, the update was not
                message = (f"parameter '{non_finite[0]}' holds {non_finite[1]} NaN or infinite "
                           f"value(s) after step {step}; nothing saved; last good checkpoint: "
                           f"{last_good or 'none written yet'}")
                log.error(message)
                raise NonFiniteLossError(message)
            save_training_state(state_path, step, method, optimizer, regularizer, history,
                                dataclasses.asdict(cfg))
            last_good = str(state_path)
    bar.close()
    elapsed = time.perf_counter() - started

    if rank == 0:
        epochs_done = round(step / steps_per_epoch, 3)
        save_backbone(run_dir / BACKBONE_FILE, method.backbone.state_dict(), {
            "method": cfg.method, "regularizer": cfg.regularizer, "arch": cfg.arch,
            "stem": cfg.stem, "data": cfg.data if cfg.data_root else f"synthetic-{cfg.data}",
            "data_root": cfg.data_root or "embedded", "image_size": cfg.image_size,
            "epochs": epochs_done, "steps": step, "seed": cfg.seed, "commit": git_commit(),
            **regularizer.backbone_metadata()})
        metrics = {"steps": step, "epochs": epochs_done, "final_loss": history[-1]["loss"],
                   "wall_s": round(elapsed, 2),
                   "images_per_s": round(images / elapsed, 2) if elapsed > 0 else None,
                   "history": history, "backbone": str(run_dir / BACKBONE_FILE)}
        text = json.dumps(metrics, indent=1).encode()
        atomic_write(run_dir / "metrics.json", lambda f: f.write(text))
        writer.close()
        log.info(f"done: {run_dir / BACKBONE_FILE} ({metrics['images_per_s']} images/s)")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    gpus = build_parser().parse_known_args(argv)[0].__dict__.get("gpus", 1)
    if gpus > 1 and "LOCAL_RANK" not in os.environ:  # --gpus N: this command under torchrun
        import subprocess

        return subprocess.call(torchrun_command("pretrain.train", argv, gpus))
    try:
        return run_main(lambda: train(*parse_args(argv)), prog="pretrain",
                        statuses={NonFiniteLossError: 3})
    finally:
        if D.launched():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
