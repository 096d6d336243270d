"""RCL: Reconstructive Contrastive Learning ("Making Contrastive Learning Robust to Shortcuts").

A decoder reconstructs the input from the encoder's feature map of a masked view M(x): 3 to 5
random squares, side 15-25% of the image side (10-16 px at 64 px in the paper's Colorful-MNIST
recipe, 40-80 px at 224 px on ImageNet), filled with the data set's mean pixel. The loss is
L = L_c + lambda L_r with lambda = 10; during the first warm-up epochs only L_r is trained
(30 of 200 epochs on Colorful-MNIST, 10 of 300 on MPII). Works with SimCLR, MoCo v2 and BYOL.

Choices:
- L_r is the mean squared error over all pixels (the paper writes ||D(E(M(x))) - x||_2; the mean
  keeps lambda = 10 meaningful at any resolution).
- The masked view is the first augmented view (the paper masks "each input image after
  augmentation"); its reconstruction target is that un-masked view.
- The fill value is the batch's per-channel mean of the (normalised) views, an unbiased running
  estimate of the data set mean that needs no pass over the data.
- During warm-up the contrastive term is multiplied by 0 rather than dropped, so every parameter
  takes part in the backward (DDP requires it) while only L_r moves the weights.
- The warm-up is a fraction of the run (0.15 = 30 of 200 epochs) so it scales with --steps.
- The decoder upsamples the backbone's last feature map with stride-2 transposed convolutions
  back to the input size (the paper's is symmetric to its 6-layer ConvNet encoder).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.methods.base import Method, Outputs, Regularizer
from pretrain.regularizers.common import options, require_method


def square_masks(batch: int, size: int, generator: torch.Generator | None = None,
                 count: tuple[int, int] = (3, 5),
                 side: tuple[float, float] = (0.15, 0.25)) -> torch.Tensor:
    """(batch, 1, size, size) bool masks, True inside 3-5 random squares per image."""
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
    """Inpainting branch on SimCLR, MoCo v2 or BYOL: L_c + lambda L_r after a L_r-only warm-up."""

    DEFAULTS = {"lam": 10.0, "warmup_fraction": 0.15, "min_squares": 3, "max_squares": 5,
                "min_side": 0.15, "max_side": 0.25, "decoder_width": 64}

    def __init__(self, method: Method, cfg: Any = None) -> None:
        super().__init__(method, cfg)
        require_method("rcl", method, ("simclr", "mocov2", "byol"))
        opts = options("rcl", cfg, self.DEFAULTS)
        self.lam, self.warmup_fraction = opts["lam"], opts["warmup_fraction"]
        self.count = (int(opts["min_squares"]), int(opts["max_squares"]))
        self.side = (opts["min_side"], opts["max_side"])
        image_size = getattr(cfg, "image_size", None) or 64
        stride = 8 if getattr(cfg, "stem", None) == "small" else 32  # res5's stride per stem
        self.decoder = Decoder(method.feature_dim, max(1, image_size // stride), image_size,
                               opts["decoder_width"])

    def joint_parameters(self) -> list[nn.Parameter]:
        return list(self.decoder.parameters())

    def regularize(self, base_loss: torch.Tensor, method: Method, batch: dict[str, torch.Tensor],
                   out: Outputs, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        view = batch["x1"]
        masks = square_masks(view.shape[0], view.shape[-1], count=self.count, side=self.side)
        masked = apply_masks(view, masks, view.mean(dim=(0, 2, 3)).detach())
        reconstruction = self.decoder(method.encode(masked)[0])
        recon = reconstruction_loss(reconstruction.float(), view.float())
        contrast_weight = 0.0 if progress < self.warmup_fraction else 1.0
        total = contrast_weight * base_loss + self.lam * recon
        return total, {"contrast": base_loss.detach(), "recon": recon.detach()}
