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
- The decoder upsamples the backbone's last feature map with stride-2 transposed convolutions
  back to the input size (the paper's is symmetric to its 6-layer ConvNet encoder).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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
