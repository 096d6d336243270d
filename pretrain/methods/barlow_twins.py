"""Barlow Twins (Zbontar et al. 2021): push the views' cross-correlation matrix to the identity.

Defaults: projector d -> 8192 -> 8192 -> 8192 with BatchNorm; loss sum_i (1 - C_ii)^2 +
5e-3 sum_{i != j} C_ij^2 on batch-standardised projections; LARS with lr 0.2 per 256 images,
weight decay 1.5e-6, 10 warm-up epochs (the paper's separate bias learning rate is not used).
Under DDP the standardisation and C use every rank's projections, gathered with gradients.
"""
from __future__ import annotations

import torch
from torch import nn

from pretrain.distributed import gather_with_grad
from pretrain.methods.base import FeatureMask, Method, Outputs, full_precision, mlp


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-dimension batch standardisation (BatchNorm1d without affine, training mode)."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def barlow_loss(z1: torch.Tensor, z2: torch.Tensor, off_diagonal_weight: float) -> torch.Tensor:
    z1, z2 = gather_with_grad(full_precision(z1)), gather_with_grad(full_precision(z2))
    c = standardize(z1).t() @ standardize(z2) / z1.shape[0]
    on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
    off_diagonal = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diagonal + off_diagonal_weight * off_diagonal


class BarlowTwins(Method):
    DEFAULTS = {"optimizer": "lars", "lr": 0.2, "weight_decay": 1.5e-6, "warmup_epochs": 10}
    SMALL_ARGS = {"proj_hidden_dim": 32, "proj_dim": 16}

    def __init__(self, backbone: nn.Module, feature_dim: int, proj_hidden_dim: int = 8192,
                 proj_dim: int = 8192, off_diagonal_weight: float = 5e-3) -> None:
        super().__init__(backbone, feature_dim)
        self.projector = mlp(feature_dim, proj_hidden_dim, proj_dim, layers=3)
        self.off_diagonal_weight = off_diagonal_weight

    def forward_views(self, x1: torch.Tensor, x2: torch.Tensor,
                      feature_mask: FeatureMask | None = None) -> Outputs:
        return self.online_views(x1, x2, feature_mask)

    def loss(self, out: Outputs) -> torch.Tensor:
        return barlow_loss(out["z1"], out["z2"], self.off_diagonal_weight)
