"""Frozen features of a backbone on a data set, extracted once and cached.

:func:`extract` runs the backbone in eval mode over a data set in batches under ``torch.no_grad``
(on CUDA in bf16 autocast and channels_last) and returns the global-average-pooled features with
the labels. :func:`cached_features` keeps them in ``<cache dir>/features/<key>.pt`` (tensors only,
written atomically), where the key hashes the backbone's identity (the checkpoint's bytes, or the
random-init control's recipe), the data set's samples (paths, labels, file sizes and times, boxes,
view) and the transform's ``repr``: a changed checkpoint, data file or transform is a new key.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from tqdm import tqdm

from pretrain.augment import MEAN, STD
from pretrain.checkpoint import CheckpointError, feature_mask, load_torch, save_state
from pretrain.open_backbone import Backbone

MAX_IMAGE_SIZE = 224

log = logging.getLogger("benchmarks")


@dataclass
class Features:
    x: torch.Tensor                    # (N, D) float32
    labels: dict[str, torch.Tensor]    # attribute -> (N,) int64


def eval_transform(image_size: int) -> T.Compose:
    """Squash to image_size x image_size (keeps a whole box crop), to tensor, ImageNet-normalise."""
    return T.Compose([T.Resize((image_size, image_size), antialias=True), T.ToTensor(),
                      T.Normalize(MEAN, STD)])


def train_transform(image_size: int, hflip: bool = True) -> T.Compose:
    """Fine-tuning's light augmentation: random crop (reflect-padded by 1/8) and, unless
    ``hflip`` is False (a mirrored digit is another symbol), a horizontal flip."""
    flip = [T.RandomHorizontalFlip()] if hflip else []
    return T.Compose([T.Resize((image_size, image_size), antialias=True),
                      T.RandomCrop(image_size, padding=image_size // 8, padding_mode="reflect"),
                      *flip, T.ToTensor(), T.Normalize(MEAN, STD)])


def native_image_size(dataset: Dataset) -> int:
    """The shorter side of the data set's first image, capped at 224: the default resolution."""
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


def loader(dataset: Dataset, batch_size: int, workers: int, shuffle_seed: int | None = None,
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
    for images, batch_labels in tqdm(loader(dataset, batch_size, workers), desc=desc,
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


def masked_features(features: Features, backbone: Backbone) -> Features | None:
    """``features`` times the backbone's MetaMask mask M (its checkpoint's ``feature_mask``): the
    representation h (x) M on which MetaMask's official code scores kNN (its paper's Table 2);
    None for a backbone without a mask."""
    mask = feature_mask(backbone.meta, features.x.shape[1], backbone.origin)
    return None if mask is None else Features(features.x * mask, features.labels)
