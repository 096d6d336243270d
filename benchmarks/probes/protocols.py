"""The protocols, on tensors: every attribute of a data set is probed at once, with one recipe.

- ``linear``: frozen features standardized with the train set's mean and std; one linear head per
  attribute, all trained together (summed cross-entropy) with :class:`LinearRecipe`: mini-batch
  AdamW from a zero initialisation, cosine schedule, fixed epochs. The seed only orders the
  mini-batches.
- ``knn5`` / ``knn200``: weighted kNN of InstDisc / solo-learn: cosine similarity on L2-normalised
  features, the k most similar train items vote for their label with weight exp(sim / 0.07); k is
  capped at the train set size. Deterministic (no seed).
- ``finetune``: the whole backbone plus one linear head per attribute, summed cross-entropy, on a
  data set whose transform augments, with :class:`FinetuneRecipe`. Deterministic by seed (heads,
  batch order and every augmentation draw).
"""
from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from benchmarks.probes.features import Features, loader
from pretrain.augment import SeededViews
from pretrain.backbones import FEATURE_DIMS, arch_of

KNN_TEMPERATURE = 0.07
KNN_KS = (5, 200)

log = logging.getLogger("benchmarks")


# ------------------------------------------------------------------------------------ heads
def make_heads(dim: int, classes: dict[str, int]) -> nn.ModuleDict:
    return nn.ModuleDict({attr: nn.Linear(dim, n) for attr, n in classes.items()})


def heads_loss(heads: nn.ModuleDict, x: torch.Tensor, labels: dict[str, torch.Tensor]):
    """Summed cross-entropy over the heads' attributes."""
    return sum(F.cross_entropy(head(x), labels[attr]) for attr, head in heads.items())


@torch.no_grad()
def heads_predict(heads: nn.ModuleDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The predicted label per attribute."""
    return {attr: head(x).argmax(1) for attr, head in heads.items()}


def accuracy(predicted: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]
             ) -> dict[str, float]:
    """Top-1 accuracy in percent per attribute of ``predicted``."""
    return {attr: 100.0 * (p.cpu() == labels[attr].cpu()).float().mean().item()
            for attr, p in predicted.items()}


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
    predicted = linear_predict(train, tests, classes, seed, recipe, device)
    return {name: accuracy(p, tests[name].labels) for name, p in predicted.items()}


def linear_predict(train: Features, tests: dict[str, Features], classes: dict[str, int],
                   seed: int = 0, recipe: LinearRecipe = LinearRecipe(),
                   device: str = "cpu") -> dict[str, dict[str, torch.Tensor]]:
    """:func:`linear_probe`'s predicted labels per test set and attribute."""
    threads = torch.get_num_threads()
    if device == "cpu":  # tiny matmuls: thread barriers cost more than they save (13x, busy CPU)
        torch.set_num_threads(1)
    try:
        return _linear_predict(train, tests, classes, seed, recipe, device)
    finally:
        torch.set_num_threads(threads)


def _linear_predict(train: Features, tests: dict[str, Features], classes: dict[str, int],
                    seed: int, recipe: LinearRecipe, device: str
                    ) -> dict[str, dict[str, torch.Tensor]]:
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
    heads = heads.cpu()
    return {name: heads_predict(heads, (test.x - mean.cpu()) / std.cpu())
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


# ---------------------------------------------------------------------------------- fine-tune
@dataclass(frozen=True)
class FinetuneRecipe:
    epochs: float = 1.0   # fractions allowed: the CPU default trains on part of an epoch
    batch_size: int = 64
    lr: float = 0.02
    weight_decay: float = 5e-4
    hflip: bool = True    # horizontal flip in the augmentation (False: the task's labels mirror)


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
        writer = SummaryWriter(str(tensorboard))
    cuda = device.startswith("cuda")
    bar = tqdm(total=steps, desc=f"finetune seed {seed}", file=sys.stderr, leave=False)
    step = 0
    while step < steps:
        seeded.epoch = step // per_epoch
        batches = loader(seeded, batch_size, workers,
                         shuffle_seed=seed * 1000 + seeded.epoch, drop_last=True)
        for images, labels in batches:
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
