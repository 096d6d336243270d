"""RCL: Reconstructive Contrastive Learning ("Making Contrastive Learning Robust to Shortcuts").

A decoder reconstructs the input from the encoder's feature map of a masked view M(x): 3 to 5
random squares filled with the data set's mean pixel. The loss is L = L_c + lambda L_r with
lambda = 10; during a warm-up the network trains on L_r alone (Appendix C: "we only train the
network with the reconstruction loss L_r"; lambda is set "for later training"). The paper's
contrastive branch "applies the same training scheme as MoCo" (Appendix C; its Table 6 and
ImageNet results compare against MoCo), so ``mocov2+rcl`` is the paper's pairing; SimCLR and BYOL
are the other branches it names.

Settings from the paper (Appendix C), per data set (``cfg.data``; the suite's default data set,
Colorful-MNIST, when the config names none):

- Square sides as fractions of the image side: 10-16 px of 64 for Colorful-MNIST (10/64-16/64),
  40-80 px of 224 on ImageNet and "other RGB data sets" (40/224-80/224), so the same squares at the
  paper's resolutions and proportionate ones at any other (``min_side``/``max_side``).
- Warm-up: 30 of 200 epochs (Colorful-MNIST), 10 of 300 (MPII), 30 of 1000 (FairFace), 10 of 800
  (ImageNet, used for COCO and image folders). A run as long as the paper's or shorter warms up for
  the paper's fraction of it, a longer one for the paper's epochs
  (:func:`pretrain.regularizers.common.warmup_fraction`): the CPU budget's 50 steps of 32
  Colorful-MNIST images (0.27 epochs) warm up for 15% of them. ``warmup_epochs`` sets the epochs.
- The fill is the data set's mean pixel, computed once when the regularizer is built from the
  reader's training images: the per-image RGB mean of an evenly spaced sample of at most 512 of
  them (the first, the last and equal strides between; no augmentation, no randomness, so every
  rank and every resumed run gets the same value), averaged and normalised like the views. A
  sample because a pass over COCO or FairFace would take minutes for a figure the sample gives
  to about the third decimal. Without a data set (a module built outside the training loop, e.g.
  by the throughput bench) the fill is the normalisation's mean, 0.

Choices where the paper is silent:

- L_r is the mean squared error over all pixels (the paper writes ||D(E(M(x))) - x||_2; the mean
  keeps lambda = 10 meaningful at any resolution).
- The masked view is the first augmented view (the paper masks "each input image after
  augmentation"); its reconstruction target is that un-masked view.
- During warm-up the contrastive term is multiplied by 0 rather than dropped, so every parameter
  takes part in the backward (DDP requires it) while only L_r, unweighted, moves the weights.
- The decoder upsamples the backbone's last feature map with stride-2 transposed convolutions
  back to the input size (the paper's is symmetric to its 6-layer ConvNet encoder).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pretrain.augment import MEAN, STD
from pretrain.data import build_unlabelled
from pretrain.methods.base import Method, Outputs, Regularizer, full_precision
from pretrain.regularizers.common import options, require_method, warmup_fraction

#: (warm-up epochs, training epochs) and square sides (fractions of the image side) per data set.
PAPER_WARMUP = {"colorful_mnist": (30, 200), "mpii": (10, 300), "fairface": (30, 1000)}
IMAGENET_WARMUP = (10, 800)
PAPER_SIDES = {"colorful_mnist": (10 / 64, 16 / 64)}
IMAGENET_SIDES = (40 / 224, 80 / 224)
MEAN_SAMPLE = 512


def square_masks(batch: int, size: int, generator: torch.Generator | None = None,
                 count: tuple[int, int] = (3, 5),
                 side: tuple[float, float] = PAPER_SIDES["colorful_mnist"]) -> torch.Tensor:
    """(batch, 1, size, size) bool masks, True inside 3-5 random squares per image, each of a
    side between ``side`` x ``size`` (rounded)."""
    masks = torch.zeros(batch, 1, size, size, dtype=torch.bool)
    low, high = max(1, round(side[0] * size)), max(1, round(side[1] * size))
    for i in range(batch):
        n = int(torch.randint(count[0], count[1] + 1, (1,), generator=generator))
        for _ in range(n):
            s = int(torch.randint(low, high + 1, (1,), generator=generator))
            y, x = (int(v) for v in torch.randint(0, size - s + 1, (2,), generator=generator))
            masks[i, 0, y:y + s, x:x + s] = True
    return masks


def apply_masks(images: torch.Tensor, masks: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Fill the masked squares of (N, C, H, W) images with ``fill`` (C,), the data set mean."""
    return torch.where(masks.to(images.device), fill.view(1, -1, 1, 1).to(images), images)


def dataset_mean(data: str, root: str | None, sample: int = MEAN_SAMPLE) -> torch.Tensor:
    """Mean pixel (3,) of the data set's training images, normalised like the views: the mean of
    the per-image means of ``sample`` evenly spaced images (all of them if fewer)."""
    images = build_unlabelled(data, root, transform=None)
    n = len(images)
    count = min(n, sample)
    indices = [round(i * (n - 1) / max(1, count - 1)) for i in range(count)]
    means = [torch.from_numpy(np.asarray(images[i], dtype=np.float64) / 255).mean(dim=(0, 1))
             for i in indices]
    return ((torch.stack(means).mean(dim=0) - torch.tensor(MEAN, dtype=torch.float64))
            / torch.tensor(STD, dtype=torch.float64)).float()


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_r: mean squared error between the reconstruction and the un-masked view."""
    return F.mse_loss(reconstruction, target)


class Decoder(nn.Module):
    """Feature map (N, C, h, w) -> image (N, 3, H, W) with stride-2 transposed convolutions."""

    def __init__(self, in_channels: int, feature_size: int, image_size: int,
                 width: int = 64) -> None:
        super().__init__()
        ups = max(0, round(math.log2(image_size / feature_size)))
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 1)]
        for _ in range(ups):
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, 3, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.image_size = image_size

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        out = self.net(feature_map)
        if out.shape[-1] != self.image_size:
            out = F.interpolate(out, size=self.image_size, mode="bilinear", align_corners=False)
        return out


class RCL(Regularizer):
    """Inpainting branch on MoCo v2, SimCLR or BYOL: L_c + lambda L_r after a L_r-only warm-up."""

    DEFAULTS = {"lam": 10.0, "warmup_epochs": None, "min_squares": 3, "max_squares": 5,
                "min_side": None, "max_side": None, "decoder_width": 64}

    def __init__(self, method: Method, cfg: Any = None) -> None:
        super().__init__(method, cfg)
        require_method("rcl", method, ("mocov2", "simclr", "byol"))
        opts = options("rcl", cfg, self.DEFAULTS)
        data = getattr(cfg, "data", None)
        self.lam, self.warmup_epochs = opts["lam"], opts["warmup_epochs"]
        self.paper_warmup = PAPER_WARMUP.get(data or "colorful_mnist", IMAGENET_WARMUP)
        self.count = (int(opts["min_squares"]), int(opts["max_squares"]))
        sides = PAPER_SIDES.get(data or "colorful_mnist", IMAGENET_SIDES)
        self.side = (opts["min_side"] or sides[0], opts["max_side"] or sides[1])
        fill = dataset_mean(data, getattr(cfg, "data_root", None)) if data else torch.zeros(3)
        self.register_buffer("fill", fill)
        image_size = getattr(cfg, "image_size", None) or 64
        stride = 8 if getattr(cfg, "stem", None) == "small" else 32  # res5's stride per stem
        self.decoder = Decoder(method.feature_dim, max(1, image_size // stride), image_size,
                               opts["decoder_width"])

    def joint_parameters(self) -> list[nn.Parameter]:
        return list(self.decoder.parameters())

    def warmup_fraction(self) -> float:
        """The reconstruction-only warm-up as a fraction of the run."""
        if self.warmup_epochs is None:
            return warmup_fraction(*self.paper_warmup, self.run_epochs())
        return self.warmup_epochs / (self.run_epochs() or self.paper_warmup[1])

    def regularize(self, base_loss: torch.Tensor, method: Method, batch: dict[str, torch.Tensor],
                   out: Outputs, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        view = batch["x1"]
        masks = square_masks(view.shape[0], view.shape[-1], count=self.count, side=self.side)
        masked = apply_masks(view, masks, self.fill)
        reconstruction = self.decoder(method.encode(masked)[0])
        recon = reconstruction_loss(full_precision(reconstruction), full_precision(view))
        if progress < self.warmup_fraction():  # "only train ... with the reconstruction loss"
            total = 0.0 * base_loss + recon
        else:
            total = base_loss + self.lam * recon
        return total, {"contrast": base_loss.detach(), "recon": recon.detach()}
