"""MCR: Meta Comprehensive Regularization with CompMod (AAAI 2024).

The paper calls the regularized methods "SimCLR+", "BYOL+" and "BarlowTwins+".

CompMod g_xi maps the fused backbone features h_hat = [h^1, h^2] (concatenation, eq. 5; an MLP
2d'-d'-d) to a comprehensive embedding Z_hat. With the maximum-entropy-coding Taylor series

    T(A, B) = Tr(mu sum_{k=1..m} (-1)^{k+1}/k (lambda A B^T)^k),

L_comp = -T(Z_hat, Z_hat) (eq. 6) and L_mcr = -sum_{t=1,2} T(Z_hat, Z_t) (eq. 7).
Regular step (eq. 8): backbone and projector minimise L_ssl + lambda1 L_mcr with xi fixed.
Meta step (eq. 9): a virtual step of backbone and projector with that gradient (graph kept), then
xi minimises L_ssl(virtual weights) + lambda2 L_comp.

Choices where the paper is silent:
- lambda1 = 0.01, lambda2 = 0.1: the best cell of the paper's Table 6 (SimCLR+ on CIFAR-10).
- mu, lambda and m follow maximum entropy coding (Liu et al. 2022), which the paper builds on:
  mu = (N + d) / 2 and lambda = d / (N eps) (MEC's eps_d = eps / d, lambda = 1 / (N eps_d)) with
  eps = 64, Taylor order m = 4. Rows of Z are L2-normalised first, as in MEC, so the series
  converges for spread-out embeddings.
- Z_t are the projector outputs z of the base method (BYOL: the online projections).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.methods.base import Method, Outputs, Regularizer
from pretrain.regularizers.common import options, output_dim, require_method
from pretrain.regularizers.virtual_step import bilevel_update


def mec_trace(a: torch.Tensor, b: torch.Tensor, mu: float, lam: float, order: int) -> torch.Tensor:
    """Tr(mu sum_k (-1)^{k+1}/k (lam a b^T)^k) for (N, d) a and b.

    Uses Tr((a b^T)^k) = Tr((b^T a)^k), so the powers are taken of the smaller of N x N and d x d.
    """
    c = lam * (a @ b.t() if a.shape[0] <= a.shape[1] else b.t() @ a)
    power, series = c, torch.zeros((), dtype=a.dtype, device=a.device)
    for k in range(1, order + 1):
        series = series + (-1) ** (k + 1) / k * torch.trace(power)
        power = power @ c
    return mu * series


def mec_constants(batch: int, dim: int, eps: float = 64.0) -> tuple[float, float]:
    """(mu, lambda) of maximum entropy coding for a batch of ``batch`` d-dimensional embeddings."""
    return (batch + dim) / 2, dim / (batch * eps)


def comp_loss(z_hat: torch.Tensor, order: int = 4, eps: float = 64.0) -> torch.Tensor:
    """L_comp (eq. 6): minus the coding length of the comprehensive embedding."""
    z_hat = F.normalize(z_hat, dim=1)
    mu, lam = mec_constants(*z_hat.shape, eps)
    return -mec_trace(z_hat, z_hat, mu, lam, order)


def mcr_loss(z_hat: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, order: int = 4,
             eps: float = 64.0) -> torch.Tensor:
    """L_mcr (eq. 7): pulls each view's embedding matrix towards the comprehensive one."""
    z_hat = F.normalize(z_hat, dim=1)
    mu, lam = mec_constants(*z_hat.shape, eps)
    return -sum(mec_trace(z_hat, F.normalize(z, dim=1), mu, lam, order) for z in (z1, z2))


class CompMod(nn.Module):
    """g_xi: [h^1, h^2] (2d') -> d' -> d, the comprehensive embedding."""

    def __init__(self, feature_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * feature_dim, feature_dim),
                                 nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True),
                                 nn.Linear(feature_dim, out_dim))

    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([h1, h2], dim=1))


class MCR(Regularizer):
    """CompMod + MCR on SimCLR, BYOL or Barlow Twins: L_ssl + lambda1 L_mcr, meta step for xi."""

    DEFAULTS = {"lambda1": 0.01, "lambda2": 0.1, "order": 4, "eps": 64.0, "meta_lr": 1e-3,
                "meta_every": 1}

    def __init__(self, method: Method, cfg: Any = None) -> None:
        super().__init__(method, cfg)
        require_method("mcr", method, ("simclr", "byol", "barlow_twins"))
        opts = options("mcr", cfg, self.DEFAULTS)
        self.lambda1, self.lambda2 = opts["lambda1"], opts["lambda2"]
        self.order, self.eps, self.meta_every = int(opts["order"]), opts["eps"], \
            int(opts["meta_every"])
        self.compmod = CompMod(method.feature_dim, output_dim(method.projector))
        self.meta_optimizer = torch.optim.Adam(self.compmod.parameters(), lr=opts["meta_lr"])

    def _mcr(self, out: Outputs) -> torch.Tensor:
        z_hat = self.compmod(out["h1"], out["h2"])
        return mcr_loss(z_hat, out["z1"], out["z2"], self.order, self.eps)

    def regularize(self, base_loss: torch.Tensor, method: Method, batch: dict[str, torch.Tensor],
                   out: Outputs, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # xi is not in the main optimizer, so it stays fixed here (its stray .grad is overwritten
        # by the meta step).
        mcr = self._mcr(out)
        return base_loss + self.lambda1 * mcr, {"ssl": base_loss.detach(), "mcr": mcr.detach()}

    def meta_step(self, method: Method, batch: dict[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer, lr: float, step: int) -> dict[str, float]:
        return bilevel_update(
            method, batch,
            inner=lambda out: out["loss"] + self.lambda1 * self._mcr(out),
            outer=lambda out: out["loss"] + self.lambda2 * comp_loss(
                self.compmod(out["h1"], out["h2"]), self.order, self.eps),
            meta_optimizer=self.meta_optimizer, lr=lr, optimizer=optimizer)
