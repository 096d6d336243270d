"""SimCLR (Chen et al. 2020): NT-Xent between two views, 2-layer MLP projector.

Defaults: projector d -> d -> 128 with BatchNorm, temperature 0.5 (the paper's CIFAR setting and
ICL-MSR's, section 6.1), LARS with lr 0.3 per 256 images, weight decay 1e-6, 10 warm-up epochs.
Under DDP the negatives are every rank's embeddings, gathered with gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.distributed import gather_with_grad, rank
from pretrain.methods.base import FeatureMask, Method, Outputs, full_precision, mlp


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean NT-Xent over this rank's 2n anchors; candidates are both views of every rank's batch."""
    z1, z2 = F.normalize(full_precision(z1), dim=1), F.normalize(full_precision(z2), dim=1)
    n = z1.shape[0]
    all1, all2 = gather_with_grad(z1), gather_with_grad(z2)
    total = all1.shape[0]
    logits = torch.cat([z1, z2]) @ torch.cat([all1, all2]).t() / temperature
    own = torch.arange(n, device=z1.device) + rank() * n
    self_index = torch.cat([own, own + total])
    positive = torch.cat([own + total, own])
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(2 * n, device=z1.device), self_index] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    return F.cross_entropy(logits, positive)


class SimCLR(Method):
    DEFAULTS = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6, "warmup_epochs": 10}
    SMALL_ARGS = {"proj_hidden_dim": 32, "proj_dim": 16}

    def __init__(self, backbone: nn.Module, feature_dim: int, proj_hidden_dim: int | None = None,
                 proj_dim: int = 128, temperature: float = 0.5) -> None:
        super().__init__(backbone, feature_dim)
        self.projector = mlp(feature_dim, proj_hidden_dim or feature_dim, proj_dim)
        self.temperature = temperature

    def forward_views(self, x1: torch.Tensor, x2: torch.Tensor,
                      feature_mask: FeatureMask | None = None) -> Outputs:
        return self.online_views(x1, x2, feature_mask)

    def loss(self, out: Outputs) -> torch.Tensor:
        return nt_xent(out["z1"], out["z2"], self.temperature)
