"""MetaMask: meta-learned dimensional mask against dimensional confounders (NeurIPS 2022).

A learnable mask M (one weight per backbone feature dimension, initialised to 1) multiplies the
pooled feature h. Two heads read the masked feature: g_drr with the Barlow Twins redundancy-
reduction loss and g_cl, the base method's own projector, with its contrastive loss.
Regular step (eq. 5): encoder and both heads minimise L_drr + alpha L_contrast with M fixed.
Meta step (eqs. 6-7, Algorithm 1): trial weights theta' = theta - l grad L_contrast for the encoder
and g_cl (graph kept), then M minimises L_contrast(g_cl'(f'(x) * M)), a second-order gradient.
alpha = 100 (the paper's best value, appendix Figure 6).

Choices:
- L_contrast is the base method's loss (NT-Xent for SimCLR; the paper's Table 2 also pairs
  MetaMask with Barlow Twins, where the base loss then plays that role).
- g_drr is a 3-layer MLP like Barlow Twins' projector, d -> 2048 -> 2048 -> 2048 by default
  (Barlow Twins uses 8192; 2048 keeps the CPU default affordable; ``--regularizer-arg
  drr_dim=8192`` for the paper's width), off-diagonal weight 5e-3.
- The trial step's learning rate l is the main optimizer's current learning rate; M is trained
  with Adam.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pretrain.methods.barlow_twins import barlow_loss
from pretrain.methods.base import Method, Outputs, Regularizer, mlp
from pretrain.regularizers.common import options, require_method
from pretrain.regularizers.virtual_step import bilevel_update


class DimensionalMask(nn.Module):
    """h -> h * M, one weight per feature dimension, initialised to 1 (no masking)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.weight


class MetaMask(Regularizer):
    DEFAULTS = {"alpha": 100.0, "drr_dim": 2048, "off_diagonal_weight": 5e-3, "meta_lr": 1e-3,
                "meta_every": 1}

    def __init__(self, method: Method, cfg: Any = None) -> None:
        super().__init__(method, cfg)
        require_method("metamask", method, ("simclr", "barlow_twins"))
        opts = options("metamask", cfg, self.DEFAULTS)
        self.alpha, self.off_diagonal_weight = opts["alpha"], opts["off_diagonal_weight"]
        self.meta_every = int(opts["meta_every"])
        self.feature_mask = DimensionalMask(method.feature_dim)
        self.drr_head = mlp(method.feature_dim, opts["drr_dim"], opts["drr_dim"], layers=3)
        self.meta_optimizer = torch.optim.Adam(self.feature_mask.parameters(), lr=opts["meta_lr"])

    def joint_parameters(self) -> list[nn.Parameter]:
        return list(self.drr_head.parameters())

    def regularize(self, base_loss: torch.Tensor, method: Method, batch: dict[str, torch.Tensor],
                   out: Outputs, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask = self.feature_mask.weight.detach()  # M is fixed in the regular step
        drr = barlow_loss(self.drr_head(out["h1"] * mask), self.drr_head(out["h2"] * mask),
                          self.off_diagonal_weight)
        return drr + self.alpha * base_loss, {"contrast": base_loss.detach(), "drr": drr.detach()}

    def meta_step(self, method: Method, batch: dict[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer, lr: float, step: int) -> dict[str, float]:
        def contrast(out: Outputs) -> torch.Tensor:
            return out["loss"]

        return bilevel_update(method, batch, inner=contrast, outer=contrast,
                              meta_optimizer=self.meta_optimizer, lr=lr, optimizer=optimizer,
                              feature_mask=self.feature_mask)
