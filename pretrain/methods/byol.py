"""BYOL (Grill et al. 2020): online projector + predictor regress an EMA target's projection.

Defaults: projector and predictor d -> 4096 -> 256 with BatchNorm; target momentum increased from
0.99 to 1 by a cosine over training (tau = 1 - (1 - 0.99)(cos(pi k / K) + 1) / 2); symmetric loss
2 - 2 cos(p1, t2) + 2 - 2 cos(p2, t1), batch mean; LARS with lr 0.2 per 256 images, weight decay
1.5e-6, 10 warm-up epochs. The target (backbone + projector) moves only in :meth:`after_step`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.methods.base import (
    FeatureMask,
    Method,
    Outputs,
    ema_update,
    frozen_copy,
    full_precision,
    mlp,
)


def regression_loss(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, target) per sample."""
    return 2 - 2 * F.cosine_similarity(full_precision(p), full_precision(target), dim=1)


class BYOL(Method):
    DEFAULTS = {"optimizer": "lars", "lr": 0.2, "weight_decay": 1.5e-6, "warmup_epochs": 10}
    SMALL_ARGS = {"proj_hidden_dim": 32, "proj_dim": 16}

    def __init__(self, backbone: nn.Module, feature_dim: int, proj_hidden_dim: int = 4096,
                 proj_dim: int = 256, base_momentum: float = 0.99) -> None:
        super().__init__(backbone, feature_dim)
        self.projector = mlp(feature_dim, proj_hidden_dim, proj_dim)
        self.predictor = mlp(proj_dim, proj_hidden_dim, proj_dim)
        self.target_backbone = frozen_copy(backbone)
        self.target_projector = frozen_copy(self.projector)
        self.base_momentum = base_momentum

    def forward_views(self, x1: torch.Tensor, x2: torch.Tensor,
                      feature_mask: FeatureMask | None = None) -> Outputs:
        out = self.online_views(x1, x2, feature_mask)
        out["p1"], out["p2"] = self.predictor(out["z1"]), self.predictor(out["z2"])
        with torch.no_grad():
            for i, x in (("1", x1), ("2", x2)):
                out["t" + i] = self.target_projector(self.encode(x, self.target_backbone)[1])
        return out

    def loss(self, out: Outputs) -> torch.Tensor:
        return (regression_loss(out["p1"], out["t2"])
                + regression_loss(out["p2"], out["t1"])).mean()

    def momentum(self, progress: float) -> float:
        return 1 - (1 - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def after_step(self, out: Outputs, progress: float) -> None:
        m = self.momentum(progress)
        ema_update(self.target_backbone, self.backbone, m)
        ema_update(self.target_projector, self.projector, m)
