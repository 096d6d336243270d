"""The probe engine: frozen-feature probes and multi-head fine-tuning of a ResNet backbone.

Protocols (every attribute of a data set is probed at once, with the same recipe):

- ``linear``: features of the frozen backbone (eval mode, global-average-pooled, extracted once and
  cached), standardized with the train set's mean and std; one linear head per attribute, all
  trained together (summed cross-entropy) with :class:`LinearRecipe`: mini-batch AdamW from a zero
  initialisation, cosine schedule, fixed epochs. The seed only orders the mini-batches.
- ``knn5`` / ``knn200``: weighted kNN of InstDisc / solo-learn: cosine similarity on L2-normalised
  features, the k most similar train images vote for their label with weight exp(sim / 0.07);
  k is capped at the train set size. Deterministic (no seed).
- ``finetune``: the whole backbone plus one linear head per attribute, summed cross-entropy,
  light augmentation (random crop with reflect padding + horizontal flip), :class:`FinetuneRecipe`.
  Deterministic by seed (heads, batch order and every augmentation draw).
- ``supervised:<a>+<b>``: the RCL paper's "supervised on X" ceilings: the ``finetune`` code trains a
  backbone from random init (or ``--weights``) with heads for the named attributes only, then the
  ``linear`` protocol measures every attribute on it.

Feature cache: ``<cache dir>/features/<key>.pt`` (tensors only, written atomically), where the key
hashes the checkpoint's bytes (or the random init's arch/stem/seed), the data set's samples
(paths, labels, file sizes and times, boxes, view) and the transform's ``repr``: a changed
checkpoint, data file or transform is a new key.

Speed: extraction runs in batches under ``torch.no_grad`` with the backbone in eval mode; on CUDA in
bf16 autocast and channels_last.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from tqdm import tqdm

from benchmarks import leaderboard
from pretrain.augment import MEAN, STD, SeededViews
from pretrain.backbones import FEATURE_DIMS, arch_of
from pretrain.checkpoint import (
    CheckpointError,
    atomic_write,
    git_commit,
    load_torch,
    save_backbone,
    save_state,
)
from pretrain.cli import InputError, run_main
from pretrain.open_backbone import (
    RANDOM,
    Backbone,
    add_backbone_arguments,
    is_random,
    open_backbone,
)

KNN_TEMPERATURE = 0.07
KNN_KS = (5, 200)
MAX_IMAGE_SIZE = 224
DEFAULT_CACHE_DIR = Path("runs/cache")
# Default fine-tuning length: on the CPU a quarter epoch (the embedded default in a few minutes
# with the ImageNet stem), on a GPU a real schedule.
FINETUNE_EPOCHS = {"cpu": 0.25, "cuda": 30.0}

log = logging.getLogger("benchmarks")


class ProbeError(InputError):
    """Bad input to a benchmark (flag, checkpoint or data); the message names it and the fix."""


def backbone_fields(backbone: Backbone) -> dict[str, Any]:
    """The leaderboard's backbone columns."""
    return leaderboard.backbone_fields(backbone.weights, backbone.meta)


# ------------------------------------------------------------------------------------ features
@dataclass
class Features:
    x: torch.Tensor                    # (N, D) float32
    labels: dict[str, torch.Tensor]    # attribute -> (N,) int64


def eval_transform(image_size: int) -> T.Compose:
    """Squash to image_size x image_size (keeps a whole box crop), to tensor, ImageNet-normalise."""
    return T.Compose([T.Resize((image_size, image_size), antialias=True), T.ToTensor(),
                      T.Normalize(MEAN, STD)])


def train_transform(image_size: int) -> T.Compose:
    """Fine-tuning's light augmentation: random crop (reflect-padded by 1/8) and flip."""
    return T.Compose([T.Resize((image_size, image_size), antialias=True),
                      T.RandomCrop(image_size, padding=image_size // 8, padding_mode="reflect"),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])


def native_image_size(dataset: Dataset) -> int:
    """The shorter side of the data set's first image, capped at 224: the default resolution."""
    from PIL import Image

    path = dataset.samples[0][0]
    with Image.open(path) as img:
        return min(min(img.size), MAX_IMAGE_SIZE)


def data_fingerprint(dataset: Dataset) -> str:
    """sha256 of what a reader yields: sample paths, labels, file sizes/times, boxes and view."""
    digest = hashlib.sha256()
    for path, labels in dataset.samples:
        stat = path.stat()
        digest.update(f"{path}|{sorted(labels.items())}|{stat.st_size}|{stat.st_mtime_ns}\n"
                      .encode())
    digest.update(repr((getattr(dataset, "boxes", None), getattr(dataset, "view", None))).encode())
    return digest.hexdigest()


def feature_key(backbone: Backbone, dataset: Dataset) -> str:
    """Cache key of (checkpoint, data set and split, transform, arch/stem)."""
    parts = {"backbone": backbone.key, "arch": backbone.meta["arch"],
             "stem": backbone.meta["stem"], "data": data_fingerprint(dataset),
             "transform": repr(dataset.transform)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _collate(batch: list[tuple[torch.Tensor, dict[str, int]]]):
    images = torch.stack([image for image, _ in batch])
    labels = {attr: torch.tensor([lab[attr] for _, lab in batch]) for attr in batch[0][1]}
    return images, labels


def _loader(dataset: Dataset, batch_size: int, workers: int, shuffle_seed: int | None = None,
            drop_last: bool = False) -> DataLoader:
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None,
                      generator=generator, num_workers=workers, collate_fn=_collate,
                      drop_last=drop_last, persistent_workers=False)


@torch.no_grad()
def extract(model: nn.Module, dataset: Dataset, device: str, batch_size: int = 128,
            workers: int = 0, desc: str = "extract") -> tuple[Features, float]:
    """Pooled features of every item (eval mode), and the images/s of the whole pass."""
    model.eval().to(device)
    cuda = device.startswith("cuda")
    if cuda:
        model.to(memory_format=torch.channels_last)
    feats, labels = [], {}
    started = time.perf_counter()
    for images, batch_labels in tqdm(_loader(dataset, batch_size, workers), desc=desc,
                                     leave=False, file=sys.stderr):
        images = images.to(device, non_blocking=True)
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            feats.append(model(images).float().cpu())
        for attr, values in batch_labels.items():
            labels.setdefault(attr, []).append(values)
    seconds = time.perf_counter() - started
    return (Features(torch.cat(feats), {a: torch.cat(v) for a, v in labels.items()}),
            len(dataset) / seconds)


def cached_features(backbone: Backbone, dataset: Dataset, cache_dir: Path, device: str,
                    batch_size: int = 128, workers: int = 0, desc: str = "extract",
                    timings: dict[str, float] | None = None) -> Features:
    """:func:`extract` through the feature cache; a fresh extraction's images/s goes in timings."""
    path = Path(cache_dir) / "features" / f"{feature_key(backbone, dataset)}.pt"
    if path.exists():
        try:
            saved = load_torch(path)
            return Features(saved["x"], saved["labels"])
        except (CheckpointError, KeyError, TypeError) as err:
            log.warning(f"ignoring unreadable feature cache {path} ({err}); re-extracting")
    features, rate = extract(backbone.model, dataset, device, batch_size, workers, desc)
    log.info(f"{desc}: {len(dataset)} images at {rate:.1f} images/s -> {path}")
    if timings is not None:
        timings[desc] = round(rate, 2)
    save_state(path, {"x": features.x, "labels": features.labels})
    return features


# -------------------------------------------------------------------------------------- heads
def make_heads(dim: int, classes: dict[str, int]) -> nn.ModuleDict:
    return nn.ModuleDict({attr: nn.Linear(dim, n) for attr, n in classes.items()})


def heads_loss(heads: nn.ModuleDict, x: torch.Tensor, labels: dict[str, torch.Tensor]):
    """Summed cross-entropy over the heads' attributes."""
    return sum(F.cross_entropy(head(x), labels[attr]) for attr, head in heads.items())


@torch.no_grad()
def heads_accuracy(heads: nn.ModuleDict, x: torch.Tensor,
                   labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Top-1 accuracy in percent per attribute."""
    return {attr: 100.0 * (head(x).argmax(1) == labels[attr]).float().mean().item()
            for attr, head in heads.items()}


def _cosine(optimizer: torch.optim.Optimizer, steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))


# ------------------------------------------------------------------------------- linear probe
@dataclass(frozen=True)
class LinearRecipe:
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 5e-4


def linear_probe(train: Features, tests: dict[str, Features], classes: dict[str, int],
                 seed: int = 0, recipe: LinearRecipe = LinearRecipe(),
                 device: str = "cpu") -> dict[str, dict[str, float]]:
    """Linear heads for every attribute of ``classes`` trained together on ``train``;
    accuracy (%) per test set and attribute."""
    threads = torch.get_num_threads()
    if device == "cpu":  # tiny matmuls: thread barriers cost more than they save (13x, busy CPU)
        torch.set_num_threads(1)
    try:
        return _linear_probe(train, tests, classes, seed, recipe, device)
    finally:
        torch.set_num_threads(threads)


def _linear_probe(train: Features, tests: dict[str, Features], classes: dict[str, int],
                  seed: int, recipe: LinearRecipe, device: str) -> dict[str, dict[str, float]]:
    mean, std = train.x.mean(0), train.x.std(0).clamp_min(1e-6)
    x = ((train.x - mean) / std).to(device)
    labels = {a: train.labels[a].to(device) for a in classes}
    heads = make_heads(x.shape[1], classes).to(device)
    for p in heads.parameters():
        nn.init.zeros_(p)   # a convex problem: the seed then only orders the mini-batches
    optimizer = torch.optim.AdamW(heads.parameters(), lr=recipe.lr,
                                  weight_decay=recipe.weight_decay)
    batches = math.ceil(len(x) / recipe.batch_size)
    schedule = _cosine(optimizer, recipe.epochs * batches)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        for idx in order.split(recipe.batch_size):
            loss = heads_loss(heads, x[idx], {a: y[idx] for a, y in labels.items()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return {name: heads_accuracy(heads, ((test.x - mean) / std).to(device),
                                 {a: test.labels[a].to(device) for a in classes})
            for name, test in tests.items()}


# ---------------------------------------------------------------------------------------- kNN
@torch.no_grad()
def knn_predict(train: Features, queries: torch.Tensor, classes: dict[str, int],
                ks: Sequence[int] = KNN_KS, temperature: float = KNN_TEMPERATURE,
                device: str = "cpu", chunk: int = 512) -> dict[int, dict[str, torch.Tensor]]:
    """Weighted kNN (InstDisc / solo-learn): {k: {attribute: predicted labels}}.

    Cosine similarity on L2-normalised features; the k most similar train items vote for their
    label with weight exp(sim / temperature); k is capped at len(train). The neighbours are found
    once for the largest k (top-k is sorted), then every k and every attribute votes from them.
    """
    bank = F.normalize(train.x.float(), dim=1).to(device)
    k_max = min(max(ks), len(bank))
    preds: dict[int, dict[str, list[torch.Tensor]]] = {k: {a: [] for a in classes} for k in ks}
    for start in range(0, len(queries), chunk):
        query = F.normalize(queries[start:start + chunk].float(), dim=1).to(device)
        sims, idx = (query @ bank.T).topk(k_max, dim=1)
        weights = (sims / temperature).exp()
        for k in ks:
            kk = min(k, k_max)
            for attr, n in classes.items():
                votes = torch.zeros(len(query), n, device=device)
                votes.scatter_add_(1, train.labels[attr].to(device)[idx[:, :kk]], weights[:, :kk])
                preds[k][attr].append(votes.argmax(1).cpu())
    return {k: {a: torch.cat(p) for a, p in per.items()} for k, per in preds.items()}


def knn_accuracy(train: Features, test: Features, classes: dict[str, int],
                 ks: Sequence[int] = KNN_KS, device: str = "cpu") -> dict[int, dict[str, float]]:
    """{k: {attribute: top-1 accuracy %}} of :func:`knn_predict` on ``test``."""
    preds = knn_predict(train, test.x, classes, ks, device=device)
    return {k: {a: 100.0 * (p == test.labels[a]).float().mean().item() for a, p in per.items()}
            for k, per in preds.items()}


# ---------------------------------------------------------------------------------- fine-tune
@dataclass(frozen=True)
class FinetuneRecipe:
    epochs: float = 1.0   # fractions allowed: the CPU default trains on part of an epoch
    batch_size: int = 64
    lr: float = 0.02
    weight_decay: float = 5e-4


def finetune(backbone: nn.Module, dataset: Dataset, classes: dict[str, int], device: str,
             recipe: FinetuneRecipe = FinetuneRecipe(), seed: int = 0, workers: int = 0,
             tensorboard: Path | None = None) -> nn.ModuleDict:
    """Train ``backbone`` (in place) and one new head per attribute of ``classes`` on
    ``dataset`` (whose transform augments) with summed cross-entropy; returns the heads.

    SGD with momentum 0.9 and a cosine schedule. Deterministic by seed: the heads' init, the batch
    order and every augmentation draw (seeded per (seed, epoch, index), whatever the workers).
    """
    torch.manual_seed(seed)
    model = backbone.to(device).train()
    heads = make_heads(_feature_dim(model), classes).to(device)
    params = list(model.parameters()) + list(heads.parameters())
    optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=0.9,
                                weight_decay=recipe.weight_decay)
    batch_size = min(recipe.batch_size, len(dataset))  # a tiny set is one batch
    per_epoch = len(dataset) // batch_size
    steps = max(1, round(recipe.epochs * per_epoch))
    schedule = _cosine(optimizer, steps)
    seeded = SeededViews(dataset, seed)
    writer = None
    if tensorboard is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard))
    cuda = device.startswith("cuda")
    bar = tqdm(total=steps, desc=f"finetune seed {seed}", file=sys.stderr, leave=False)
    step = 0
    while step < steps:
        seeded.epoch = step // per_epoch
        loader = _loader(seeded, batch_size, workers,
                         shuffle_seed=seed * 1000 + seeded.epoch, drop_last=True)
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = {a: labels[a].to(device) for a in classes}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                feats = model(images)
            loss = heads_loss(heads, feats.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if writer is not None:
                writer.add_scalar("finetune/loss", loss.item(), step)
            if step == steps:
                break
    bar.close()
    if writer is not None:
        writer.close()
    log.info(f"fine-tuned {steps} steps ({steps / per_epoch:.2f} epochs), last loss "
             f"{loss.item():.3f}")
    return heads


def _feature_dim(model: nn.Module) -> int:
    arch = arch_of(model.state_dict())
    return FEATURE_DIMS[arch]


# ----------------------------------------------------------------------------- the task runner
@dataclass(frozen=True)
class Task:
    """What a benchmark script contributes: its name, attributes and how to read a split."""

    name: str                                   # leaderboard task
    # attribute -> number of classes, or a function of the data root that returns it
    classes: dict[str, int] | Callable[[Path], dict[str, int]]
    load: Callable[[Path, str, Any], Dataset]   # (root, "train"|"test", transform) -> reader
    default_data: Callable[[], Path] | None     # embedded default root (None: --data required)
    description: str = ""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def parser(task: Task, protocols: Sequence[str] = ("fixed", "finetune"),
           supervised: bool = True) -> argparse.ArgumentParser:
    """The flags every benchmark script shares."""
    p = argparse.ArgumentParser(prog=f"python benchmarks/{task.name}.py",
                                description=task.description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backbone_arguments(p, random_stem="'small' for images of 64 px or less, else "
                           "'imagenet'")
    p.add_argument("--data", type=Path, help="data root" + (
        "" if task.default_data is None else " (default: the embedded synthetic default)"))
    p.add_argument("--out", type=Path, help="output folder (default runs/benchmarks/"
                   f"{task.name}/<backbone>/<protocol>)")
    p.add_argument("--leaderboard", type=Path, default=leaderboard.DEFAULT_PATH,
                   help=f"leaderboard CSV to add rows to (default {leaderboard.DEFAULT_PATH})")
    if len(protocols) > 1:
        p.add_argument("--protocol", choices=protocols, help="fixed: frozen features, linear "
                       "probe and kNN (k=5, 200); finetune: whole backbone + heads (default fixed)")
    if supervised:
        names = "class" if callable(task.classes) else ", ".join(task.classes)
        p.add_argument("--supervised-on", metavar="ATTR[,ATTR]",
                       help="train a backbone from --weights (default random init) supervised on "
                       f"these attributes of {names} ('all' for every one), then "
                       "linear-probe every attribute: the 'supervised on X' ceiling")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1, reported as mean/std")
    if "finetune" in protocols or supervised:
        p.add_argument("--epochs", type=float, help="fine-tuning epochs (fractions allowed; "
                       f"default {FINETUNE_EPOCHS['cpu']:g} on the CPU, a quick look sized "
                       f"for minutes; {FINETUNE_EPOCHS['cuda']:g} on a GPU)")
        p.add_argument("--lr", type=float, default=FinetuneRecipe.lr, help="fine-tuning "
                       "learning rate (SGD, batch 64; default %(default)s)")
    p.add_argument("--linear-epochs", type=int, default=LinearRecipe.epochs,
                   help="linear-probe epochs (default %(default)s)")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the random-init control")
    p.add_argument("--image-size", type=int, help="resolution fed to the backbone (default: the "
                   "first train image's shorter side, at most 224)")
    p.add_argument("--batch-size", type=int, default=128, help="extraction batch size")
    p.add_argument("--workers", type=int, help="DataLoader workers (default 0 on the CPU, "
                   "8 on a GPU)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                   help=f"feature cache folder (default {DEFAULT_CACHE_DIR})")
    p.add_argument("--device", default=default_device(), help="cpu or cuda (default %(default)s)")
    return p


@dataclass
class Run:
    """Everything a protocol needs, resolved from the command line."""

    args: argparse.Namespace
    backbone: Backbone
    data: Path
    image_size: int
    out: Path
    workers: int
    timings: dict[str, float]

    def features(self, dataset: Dataset, desc: str, backbone: Backbone | None = None) -> Features:
        return cached_features(backbone or self.backbone, dataset, self.args.cache_dir,
                               self.args.device, self.args.batch_size, self.workers, desc,
                               self.timings)


def _setup_logging(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    log.setLevel(logging.INFO)
    log.handlers.clear()
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(out / "log.txt")):
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)


def resolve_data(task: Task, args: argparse.Namespace) -> Task:
    """Set ``args.data`` (the embedded default when absent); return the task with its classes."""
    if args.data is None:
        if task.default_data is None:
            raise ProbeError(f"{task.name}: --data is required (no embedded default)")
        args.data = task.default_data()
    if not args.data.exists():
        raise ProbeError(f"--data {args.data}: no such folder")
    if callable(task.classes):
        task = replace(task, classes=task.classes(args.data))
    return task


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def prepare(task: Task, args: argparse.Namespace, protocol: str) -> Run:
    """Resolve backbone, resolution, output folder (config.json, log.txt) for one run (after
    :func:`resolve_data`)."""
    if args.seeds < 1:
        raise ProbeError(f"--seeds must be at least 1, got {args.seeds}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ProbeError(f"--device {args.device}: no CUDA device here; use --device cpu")
    image_size = args.image_size or native_image_size(task.load(args.data, "train", None))
    weights = args.weights or RANDOM
    stem = args.stem
    if is_random(weights) and stem is None:
        stem = "small" if image_size <= 64 else "imagenet"
    backbone = open_backbone(weights, args.arch, stem, args.init_seed, args.prefix,
                             args.stride_in_1x1)
    name = backbone_fields(backbone)["backbone_id"]
    out = args.out or Path("runs/benchmarks") / task.name / name / protocol.replace(":", "_")
    _setup_logging(out)
    atomic_write(out / "config.json", lambda f: f.write(json.dumps(
        {"task": task.name, "protocol": protocol, "image_size": image_size, **_config(args)},
        indent=1).encode()))
    workers = args.workers if args.workers is not None else (
        0 if args.device == "cpu" else min(8, os.cpu_count() or 1))
    log.info(f"{task.name} / {protocol}: backbone {name} ({backbone.meta['arch']}, "
             f"{backbone.meta['stem']} stem) on {args.data} at {image_size} px, "
             f"device {args.device}; output {out}")
    return Run(args, backbone, args.data, image_size, out, workers, {})


def summarize(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """[{protocol: {metric: value}}] per seed -> {protocol: {metric: {mean, std, values}}}."""
    out: dict[str, dict[str, Any]] = {}
    for result in per_seed:
        for protocol, metrics in result.items():
            for metric, value in metrics.items():
                out.setdefault(protocol, {}).setdefault(metric, {"values": []})["values"].append(
                    round(value, 4))
    for metrics in out.values():
        for stat in metrics.values():
            values = torch.tensor(stat["values"], dtype=torch.float64)
            stat["mean"] = round(values.mean().item(), 4)
            stat["std"] = round(values.std().item(), 4) if len(values) > 1 else 0.0
            stat["n"] = len(values)
    return out


def report(task: Task, run: Run, per_seed: list[dict[str, dict[str, float]]],
           backbone: Backbone | None = None, extra: dict[str, Any] | None = None) -> dict:
    """Write ``<out>/metrics.json`` and one leaderboard row per (protocol, metric, seed)."""
    backbone = backbone or run.backbone
    fields = backbone_fields(backbone)
    results = summarize(per_seed)
    rows = [{**fields, "task": task.name, "protocol": protocol, "metric": metric,
             "value": value, "seed": seed}
            for seed, result in enumerate(per_seed)
            for protocol, metrics in result.items() for metric, value in metrics.items()]
    gaps = {}
    if task.name in leaderboard.GAPS:
        gap_name, plus, minus = leaderboard.GAPS[task.name]
        for protocol, stats in results.items():
            if all(m in stats for m in plus + minus):
                gaps[protocol] = round(sum(stats[m]["mean"] for m in plus) / len(plus)
                                       - sum(stats[m]["mean"] for m in minus) / len(minus), 4)
        gaps = {"definition": gap_name, **gaps} if gaps else {}
    metrics = {"task": task.name, "backbone": {**fields, "weights": str(backbone.weights or
                                                                        "random"),
                                               "stem": backbone.meta["stem"]},
               "data": str(run.data), "image_size": run.image_size, "seeds": len(per_seed),
               "results": results, "gap": gaps, "extraction_images_per_s": run.timings,
               "config": _config(run.args),
               "commit": git_commit(), **(extra or {})}
    atomic_write(run.out / "metrics.json",
                 lambda f: f.write(json.dumps(metrics, indent=1).encode()))
    leaderboard.write_rows(run.args.leaderboard, rows)
    for protocol, stats in results.items():
        shown = ", ".join(f"{m} {s['mean']:.2f}" + (f" ± {s['std']:.2f}" if len(per_seed) > 1
                                                     else "") for m, s in stats.items())
        log.info(f"{protocol}: {shown}")
    log.info(f"wrote {run.out / 'metrics.json'} and {len(rows)} rows to {run.args.leaderboard}")
    return metrics


def _fixed(task: Task, run: Run, backbone: Backbone, seeds: int, knn: bool = True
           ) -> list[dict[str, dict[str, float]]]:
    """Linear probe (per seed) and kNN (deterministic: reported under seed 0)."""
    train = run.features(task.load(run.data, "train", eval_transform(run.image_size)),
                         f"{task.name}/train", backbone)
    test = run.features(task.load(run.data, "test", eval_transform(run.image_size)),
                        f"{task.name}/test", backbone)
    recipe = LinearRecipe(epochs=run.args.linear_epochs)
    per_seed = []
    for seed in range(seeds):
        accuracy = linear_probe(train, {"test": test}, task.classes, seed, recipe,
                                run.args.device)["test"]
        per_seed.append({"linear": {f"{a}_top1": v for a, v in accuracy.items()}})
    if knn:
        for k, accuracy in knn_accuracy(train, test, task.classes, device=run.args.device).items():
            per_seed[0][f"knn{k}"] = {f"{a}_top1": v for a, v in accuracy.items()}
    return per_seed


def _finetune_seed(task: Task, run: Run, classes: dict[str, int], seed: int
                   ) -> tuple[nn.Module, nn.ModuleDict, FinetuneRecipe]:
    """A fresh copy of the backbone fine-tuned with heads for ``classes``."""
    model = copy.deepcopy(run.backbone.model)
    epochs = run.args.epochs if run.args.epochs is not None else (
        FINETUNE_EPOCHS["cpu" if run.args.device == "cpu" else "cuda"])
    recipe = FinetuneRecipe(epochs=epochs, lr=run.args.lr)
    heads = finetune(model, task.load(run.data, "train", train_transform(run.image_size)),
                     classes, run.args.device, recipe, seed, run.workers,
                     tensorboard=run.out / "tb" / f"seed{seed}")
    return model, heads, recipe


def run_task(task: Task, argv: list[str] | None = None) -> dict:
    """The command line of a multi-attribute benchmark script (fairface, colorful_mnist, linear)."""
    args = parser(task).parse_args(argv)
    task = resolve_data(task, args)
    attrs = _supervised_attrs(task, args.supervised_on)
    if attrs and args.protocol:
        raise ProbeError("--supervised-on and --protocol exclude each other: --supervised-on "
                         "trains a backbone and then runs the fixed protocol on it")
    if not attrs and args.weights is None:
        raise ProbeError("--weights is required (a checkpoint, or 'random')")
    protocol = f"supervised:{'+'.join(attrs)}" if attrs else (args.protocol or "fixed")
    run = prepare(task, args, protocol)
    if protocol == "fixed":
        return report(task, run, _fixed(task, run, run.backbone, args.seeds))
    if protocol == "finetune":
        test = task.load(run.data, "test", eval_transform(run.image_size))
        per_seed = []
        for seed in range(args.seeds):
            model, heads, recipe = _finetune_seed(task, run, task.classes, seed)
            feats, _ = extract(model, test, args.device, args.batch_size, run.workers,
                               f"{task.name}/test (fine-tuned)")
            accuracy = heads_accuracy(heads.cpu(), feats.x, feats.labels)
            per_seed.append({"finetune": {f"{a}_top1": v for a, v in accuracy.items()}})
        return report(task, run, per_seed, extra={"finetune_recipe": asdict(recipe)})
    return _supervised(task, run, attrs, protocol)


def _supervised(task: Task, run: Run, attrs: list[str], protocol: str) -> dict:
    """Train supervised on ``attrs`` per seed, save each backbone, linear-probe every attribute."""
    per_seed, knn, saved = [], {}, []
    init = backbone_fields(run.backbone)["backbone_id"]
    for seed in range(run.args.seeds):
        model, _, recipe = _finetune_seed(task, run, {a: task.classes[a] for a in attrs}, seed)
        path = run.out / f"seed{seed}" / "backbone.safetensors"
        saved.append(str(path))
        save_backbone(path, model.state_dict(), {
            "method": "supervised", "regularizer": "none", "arch": run.backbone.meta["arch"],
            "stem": run.backbone.meta["stem"], "data": f"{task.name}:{'+'.join(attrs)}",
            "stride_in_1x1": run.backbone.meta["stride_in_1x1"],
            "epochs": recipe.epochs, "seed": seed, "init": init, "commit": git_commit()})
        trained = open_backbone(path)
        result = _fixed(task, run, trained, 1)[0]
        knn.update({f"seed{seed}/{p}": r for p, r in result.items() if p != "linear"})
        per_seed.append({protocol: result["linear"]})
    # One leaderboard identity for all seeds of this recipe, so the board aggregates them.
    backbone = Backbone(run.backbone.model, {
        "method": "supervised", "arch": run.backbone.meta["arch"],
        "stem": run.backbone.meta["stem"], "data": task.name,
        "backbone_id": f"supervised-{'+'.join(attrs)}-{run.backbone.meta['arch']}-"
                       f"{run.backbone.meta['stem']}"
                       + ("" if run.backbone.weights is None else f"-from-{init}")}, None, "")
    return report(task, run, per_seed, backbone,
                  extra={"finetune_recipe": asdict(recipe), "supervised_backbones": saved,
                         "supervised_knn": knn})


def _supervised_attrs(task: Task, value: str | None) -> list[str]:
    if not value:
        return []
    attrs = list(task.classes) if value == "all" else [a.strip() for a in value.split(",")]
    unknown = [a for a in attrs if a not in task.classes]
    if unknown or not attrs:
        raise ProbeError(f"--supervised-on {value}: unknown attribute(s) {unknown}; choose "
                         f"among {', '.join(task.classes)} or 'all'")
    return attrs


def main(run: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Run a benchmark's command line, turning bad input into a one-line error and exit 2."""
    return run_main(lambda: run(argv))
