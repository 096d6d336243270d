"""MCR: Meta Comprehensive Regularization with CompMod (AAAI 2024).

The paper calls the regularized methods "SimCLR+", "BYOL+" and "BarlowTwins+".

CompMod g_xi maps the fused backbone features h_hat = [h^1, h^2] (concatenation, eq. 5; an MLP
2d'-d'-d) to a comprehensive embedding Z_hat. With the maximum-entropy-coding (MEC) Taylor series
of the coding length log det(I + lambda A B^T),

    S(A, B) = sum_{k=1..m} (-1)^{k+1}/k Tr((lambda A B^T)^k),

L_comp = -mu S(Z_hat, Z_hat) (eq. 6) and L_mcr = -mu sum_{t=1,2} S(Z_hat, Z_t) (eq. 7).
Regular step (eq. 8): backbone and projector minimise L_ssl + lambda1 L_mcr with xi fixed.
Meta step (eq. 9): the virtual step of backbone and projector with that gradient (graph kept),
then xi minimises L_ssl(virtual weights) + lambda2 L_comp.

The paper leaves mu, lambda, the order m and the scale of the series to maximum entropy coding
(Liu et al., NeurIPS 2022, github xinliu20/MEC, main_pretrain.py), which is followed here:

- Embeddings as MEC's: batch-standardised (MEC's projector ends in BatchNorm1d(affine=False)),
  then L2-normalised; under DDP every rank's embeddings are gathered with gradients first, so the
  batch size m in mu and lambda is the global one and W ranks compute one process's loss.
- mu = (m + d) / 2, MEC's lambda_MEC = d / (m eps) (its eps_d = eps / d, lambda = 1 / (m eps_d)),
  eps = 64, order m = 4.
- The series converges only where the spectral radius of lambda A B^T is below 1. MEC (section
  3.2) shows that this holds for any embeddings when eps_d^2 > 1, i.e. lambda m < 1 (each entry
  of A B^T is a cosine, so ||C||_2 <= sqrt(||C||_1 ||C||_inf) <= lambda m), and trains with
  lambda m = d / eps = 32, relying on its warm-up and on MEC's own spread-out embeddings. At the
  suite's batch sizes that does not hold: the eigenvalues of lambda Z Z^T sum to d / eps over at
  most m directions, so at the CPU budget's Barlow Twins (m = 32, d = 2048) even a perfectly
  spread batch sits on the radius, and a power-law spectrum (eigenvalue k ~ 1/k) at m = 256,
  d = 8192 is outside it. Here lambda = min(lambda_MEC, 1 / m): MEC's value where it meets MEC's
  guarantee, else the guarantee's edge, where only a batch collapsed onto one direction reaches
  radius 1.
- MEC trains on the series scaled by 1/(m lambda) (its loss is -S / (m lambda), so the first-order
  term is the mean cosine similarity whatever lambda) and warms lambda up over 10 of its 100
  epochs, 1/lambda going linearly from 8/lambda to 1/lambda. Both are followed: the warm-up by
  :func:`pretrain.regularizers.common.warmup_fraction` (10/100 of a short run, 10 epochs of a long
  one). So that the paper's lambda1 and lambda2 weigh the terms as eqs. 6-7 do, the MEC-scaled
  series is multiplied by the constant c = mu m lambda_MEC = (m + d) d / (2 eps): the result is
  exactly eqs. 6-7 with MEC's mu and lambda once warmed up (where lambda is lambda_MEC).
- Convergence check: every meta step logs ``mcr_radius``, lambda times the largest eigenvalue of
  Z Z^T over Z_hat, Z_1, Z_2 (a bound on the spectral radius of every series' matrix, the cross
  terms by Cauchy-Schwarz), and stops the run with an error past ``max_radius`` (1, the radius of
  convergence).
- lambda1 = 0.01, lambda2 = 0.1: the best cell of the paper's Table 6 (SimCLR+ on CIFAR-10).
- Z_t are the projector outputs z of the base method (BYOL: the online projections).

Measured (``python tools/mcr_scale.py`` and ``--run`` on the CPU budget's runs: ResNet-18, 64 px,
the embedded Colorful-MNIST, lambda past its warm-up; ratios to L_ssl; at initialisation / after
the CPU budget's 50 steps of 32 images, meta step every 4th)::

    base, m, d               lambda1 L_mcr    its backbone gradient  lambda2 L_comp  radius
    SimCLR, 32, 128          -0.0019 / -0.016      1.5 / 1.1          -3.8 / -3.9    0.17 / 0.16
    Barlow Twins, 32, 2048   +9e-5 / -0.0049     0.063 / 0.07         -1.2 / -1.8    0.15 / 0.14
    BYOL, 32, 256            -0.012                4.2                -14            0.15
    SimCLR, 256, 128         -0.0073 / -0.013      3.3 / 2.9          -6.1 / -6.2    0.14 / 0.13
    Barlow Twins, 256, 8192  -0.0012             0.16                 -5.9           0.11
    BYOL, 256, 256           -0.03                 8                  -25            0.14

lambda2 L_comp is within an order of magnitude of L_ssl for SimCLR and Barlow Twins (BYOL's loss
is smaller; L_comp's first-order term is the constant -c). lambda1 L_mcr's value is not: its
first-order term is c times the cosine between each view's embedding and Z_hat, near 0 while the
two heads are unaligned (bounded by 2c = 0.8 L_ssl for SimCLR at m = 32); its gradient on the
backbone, what it weighs in training, is within an order of magnitude of L_ssl's.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.config import ConfigError
from pretrain.distributed import gather_with_grad
from pretrain.methods.barlow_twins import standardize
from pretrain.methods.base import Method, Outputs, full_precision
from pretrain.regularizers.common import options, output_dim, require_method, warmup_fraction
from pretrain.regularizers.virtual_step import BilevelRegularizer, Objective

#: MEC's lambda warm-up: 10 of its 100 epochs, 1/lambda from 8/lambda down to 1/lambda.
MEC_WARMUP_EPOCHS, MEC_EPOCHS, MEC_WARMUP_START = 10, 100, 8.0


class SeriesDivergenceError(ConfigError):
    """The coding-length series is outside its radius of convergence."""


def coding_series(a: torch.Tensor, b: torch.Tensor, lam: float, order: int) -> torch.Tensor:
    """S(a, b) = sum_k (-1)^{k+1}/k Tr((lam a b^T)^k) for (m, d) a and b.

    Uses Tr((a b^T)^k) = Tr((b^T a)^k), so the powers are taken of the smaller of m x m and d x d.
    """
    c = lam * (a @ b.t() if a.shape[0] <= a.shape[1] else b.t() @ a)
    power, series = c, torch.zeros((), dtype=a.dtype, device=a.device)
    for k in range(1, order + 1):
        series = series + (-1) ** (k + 1) / k * torch.trace(power)
        power = power @ c
    return series


def mec_embedding(z: torch.Tensor) -> torch.Tensor:
    """Every rank's ``z`` (gathered with gradients), batch-standardised and L2-normalised."""
    return F.normalize(standardize(gather_with_grad(full_precision(z))), dim=1)


def mec_lambda(batch: int, dim: int, eps: float = 64.0, warmup: float = 1.0) -> float:
    """lambda = min(d / (m eps), 1 / m), during MEC's warm-up (``warmup`` < 1 = the fraction of
    it done) 1 / lambda(t) = (8 - 7 warmup) / lambda."""
    lam = min(dim / (batch * eps), 1 / batch)
    return lam / (MEC_WARMUP_START - (MEC_WARMUP_START - 1) * min(1.0, warmup))


def mec_scale(batch: int, dim: int, eps: float = 64.0) -> float:
    """mu m lambda_MEC = (m + d) d / (2 eps): the MEC-scaled series times this is eqs. 6-7."""
    return (batch + dim) * dim / (2 * eps)


def comp_loss(z_hat: torch.Tensor, order: int = 4, eps: float = 64.0,
              warmup: float = 1.0) -> torch.Tensor:
    """L_comp (eq. 6): minus the coding length of the comprehensive embedding."""
    e = mec_embedding(z_hat)
    (m, d), lam = e.shape, mec_lambda(*e.shape, eps, warmup)
    return -mec_scale(m, d, eps) / (m * lam) * coding_series(e, e, lam, order)


def mcr_loss(z_hat: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, order: int = 4,
             eps: float = 64.0, warmup: float = 1.0) -> torch.Tensor:
    """L_mcr (eq. 7): pulls each view's embedding matrix towards the comprehensive one."""
    e = mec_embedding(z_hat)
    (m, d), lam = e.shape, mec_lambda(*e.shape, eps, warmup)
    series = sum(coding_series(e, mec_embedding(z), lam, order) for z in (z1, z2))
    return -mec_scale(m, d, eps) / (m * lam) * series


def series_radius(embeddings: list[torch.Tensor], lam: float) -> float:
    """lam x the largest eigenvalue of e e^T over the (m, d) MEC embeddings e: the series of every
    pair of them converges below 1."""
    grams = (e @ e.t() if e.shape[0] <= e.shape[1] else e.t() @ e for e in embeddings)
    return lam * max(float(torch.linalg.eigvalsh(g.detach().double()).max()) for g in grams)


class CompMod(nn.Module):
    """g_xi: [h^1, h^2] (2d') -> d' -> d, the comprehensive embedding."""

    def __init__(self, feature_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * feature_dim, feature_dim),
                                 nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True),
                                 nn.Linear(feature_dim, out_dim))

    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([h1, h2], dim=1))


class MCR(BilevelRegularizer):
    """CompMod + MCR on SimCLR, BYOL or Barlow Twins: L_ssl + lambda1 L_mcr, meta step for xi."""

    DEFAULTS = {"lambda1": 0.01, "lambda2": 0.1, "order": 4, "eps": 64.0, "meta_lr": 1e-3,
                "meta_every": 1, "max_radius": 1.0}

    def __init__(self, method: Method, cfg: Any = None) -> None:
        super().__init__(method, cfg)
        require_method("mcr", method, ("simclr", "byol", "barlow_twins"))
        opts = options("mcr", cfg, self.DEFAULTS)
        self.lambda1, self.lambda2 = opts["lambda1"], opts["lambda2"]
        self.order, self.eps, self.meta_every = int(opts["order"]), opts["eps"], \
            int(opts["meta_every"])
        self.max_radius = opts["max_radius"]
        self.compmod = CompMod(method.feature_dim, output_dim(method.projector))
        self.meta_optimizer = torch.optim.Adam(self.compmod.parameters(), lr=opts["meta_lr"])
        self.radius = float("nan")  # of the last meta step

    def warmup(self, progress: float) -> float:
        """The fraction of MEC's lambda warm-up done at ``progress``."""
        return progress / warmup_fraction(MEC_WARMUP_EPOCHS, MEC_EPOCHS, self.run_epochs())

    def _mcr(self, out: Outputs, warmup: float) -> torch.Tensor:
        z_hat = self.compmod(out["h1"], out["h2"])
        return mcr_loss(z_hat, out["z1"], out["z2"], self.order, self.eps, warmup)

    def regularize(self, base_loss: torch.Tensor, method: Method, batch: dict[str, torch.Tensor],
                   out: Outputs, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # xi is not in the main optimizer, so it stays fixed here (its stray .grad is overwritten
        # by the meta step).
        mcr = self._mcr(out, self.warmup(progress))
        return base_loss + self.lambda1 * mcr, {"ssl": base_loss.detach(), "mcr": mcr.detach()}

    def check_series(self, out: Outputs, z_hat: torch.Tensor, warmup: float, step: int) -> None:
        with torch.no_grad():
            embeddings = [mec_embedding(z) for z in (z_hat, out["z1"], out["z2"])]
        self.radius = series_radius(embeddings, mec_lambda(*embeddings[0].shape, self.eps, warmup))
        if not self.radius < self.max_radius:
            raise SeriesDivergenceError(
                f"--regularizer mcr: at step {step} the coding-length series diverges (spectral "
                f"radius {self.radius:.3g}, max_radius {self.max_radius}): the embeddings have "
                "collapsed onto one direction (lower the learning rate or lambda1), or "
                f"--regularizer-arg eps={self.eps:g} is below the embedding width (raise it)")

    def meta_objectives(self, batch: dict[str, torch.Tensor], step: int
                        ) -> tuple[Objective, Objective]:
        warmup = self.warmup(self.progress(step))

        def inner(out: Outputs) -> torch.Tensor:
            z_hat = self.compmod(out["h1"], out["h2"])
            self.check_series(out, z_hat, warmup, step)
            return out["loss"] + self.lambda1 * mcr_loss(z_hat, out["z1"], out["z2"], self.order,
                                                         self.eps, warmup)

        def outer(out: Outputs) -> torch.Tensor:
            z_hat = self.compmod(out["h1"], out["h2"])
            return out["loss"] + self.lambda2 * comp_loss(z_hat, self.order, self.eps, warmup)

        return inner, outer

    def meta_step(self, method: Method, batch: dict[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer, lr: float, step: int) -> dict[str, float]:
        return {**super().meta_step(method, batch, optimizer, lr, step),
                "mcr_radius": self.radius}
