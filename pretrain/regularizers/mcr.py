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

CompMod is the paper's "multi-layer linear network 2d'-d'-d" (section 5): two Linear layers with
a ReLU, no BatchNorm (the paper names none; a per-rank BatchNorm would also make W ranks' Z_hat
differ from one process's).

xi's step (``xi_step``): Algorithm 1 (line 12, eq. 9) steps xi with the rate r of theta and phi, so
by default xi's optimizer is the loop's own (same class, same settings, its learning rate set to the
loop's at every meta step; LARS by default, whose trust ratio keeps the step scale-free against
L_comp's large constant c). ``xi_step=adam`` keeps the earlier choice, Adam at ``meta_lr``.

The paper leaves mu, lambda, the order m and the scale of the series to maximum entropy coding
(Liu et al., NeurIPS 2022, github xinliu20/MEC, main_pretrain.py), which is followed here:

- Embeddings as MEC's: MEC batch-standardises its teacher branch only (its projector ends in
  BatchNorm1d(affine=False), its predictor does not). Z_hat plays the teacher (eq. 7 transfers its
  information to the views), so Z_hat is batch-standardised and every embedding L2-normalised.
  Under DDP every rank's embeddings are gathered with gradients first, so the batch size m in mu
  and lambda is the global one and W ranks compute one process's loss.
- mu = (m + d) / 2, MEC's lambda_MEC = d / (m eps) (its eps_d = eps / d, lambda = 1 / (m eps_d)),
  eps = 64, order m = 4.
- The series converges only where the spectral radius of lambda A B^T is below 1. Every step (the
  regular step's L_mcr and both meta objectives) measures it: lambda times the largest eigenvalue
  of e e^T over the normalised embeddings of the series (a bound on every pair's radius, by
  Cauchy-Schwarz). lambda is MEC's where that radius is below ``max_radius`` (1); where it is not
  (e.g. Barlow Twins' 2048-d projector at m = 32: the eigenvalues of lambda_MEC e e^T sum to
  d / eps = 32 over at most 32 directions), lambda = min(lambda_MEC, 1 / m), MEC's guarantee
  (section 3.2: each entry of e e^T is a cosine, so ||C||_2 <= lambda m), which only a batch
  collapsed onto one direction reaches; such a batch stops the run with an error naming the step.
  The lambda and radius of L_mcr are logged (``mcr_lambda``, ``mcr_radius``).
- MEC trains on the series scaled by 1/(m lambda) (its first-order term is the mean cosine
  similarity whatever lambda) and warms lambda up over 10 of its 100 epochs, 1/lambda going
  linearly from 8/lambda to 1/lambda. Both are followed: the warm-up by
  :func:`pretrain.regularizers.common.warmup_fraction` (10/100 of a short run, 10 epochs of a long
  one). So that the paper's lambda1 and lambda2 weigh the terms as eqs. 6-7 do, the MEC-scaled
  series is multiplied by the constant c = mu m lambda_MEC = (m + d) d / (2 eps): once warmed up,
  where lambda is MEC's, the loss is exactly eqs. 6-7 with MEC's mu and lambda; where the
  guaranteed lambda is used, it is eqs. 6-7 at that lambda with mu scaled by lambda_MEC / lambda
  (the same first-order term).
- lambda1 = 0.01, lambda2 = 0.1: the best cell of the paper's Table 6 (SimCLR+ on CIFAR-10).
- Z_t are the projector outputs z of the base method (BYOL: the online projections).

``python tools/mcr_scale.py`` prints each term's size against L_ssl at the CPU and full budgets'
batch sizes and widths (ResNet-18, 64 px, the embedded Colorful-MNIST, lambda past its warm-up).
At initialisation (seed 0)::

    base, m, d               lambda1 L_mcr  its backbone gradient  lambda2 L_comp  radius  lambda
    SimCLR, 32, 128          +0.01 L_ssl         1.1 x               -3.7         0.68    MEC's
    Barlow Twins, 32, 2048   +0.0011             0.046               -1.2         0.34    1 / m
    BYOL, 32, 256            -0.033              3                   -12.8        0.31    1 / m
    SimCLR, 256, 128         +0.012              2.9                 -6.0         0.66    MEC's
    Barlow Twins, 256, 8192  -0.00018            0.15                -5.9         0.32    1 / m
    BYOL, 256, 256           -0.065              7.1                 -23.8        0.30    1 / m
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


def mec_embedding(z: torch.Tensor, standardise: bool = True) -> torch.Tensor:
    """Every rank's ``z`` (gathered with gradients), batch-standardised if ``standardise`` (MEC's
    teacher branch ends in BatchNorm1d(affine=False)), L2-normalised."""
    z = gather_with_grad(full_precision(z))
    return F.normalize(standardize(z) if standardise else z, dim=1)


def mec_lambda(batch: int, dim: int, eps: float = 64.0, warmup: float = 1.0,
               guaranteed: bool = False) -> float:
    """MEC's lambda = d / (m eps) (``guaranteed``: min(that, 1 / m), the convergence guarantee's
    edge); during MEC's warm-up (``warmup`` < 1 = the fraction of it done) 1 / lambda(t) =
    (8 - 7 warmup) / lambda."""
    lam = dim / (batch * eps)
    lam = min(lam, 1 / batch) if guaranteed else lam
    return lam / (MEC_WARMUP_START - (MEC_WARMUP_START - 1) * min(1.0, warmup))


def mec_scale(batch: int, dim: int, eps: float = 64.0) -> float:
    """mu m lambda_MEC = (m + d) d / (2 eps): the MEC-scaled series times this is eqs. 6-7."""
    return (batch + dim) * dim / (2 * eps)


def series_radius(embeddings: list[torch.Tensor], lam: float) -> float:
    """lam x the largest eigenvalue of e e^T over the (m, d) MEC embeddings e: the series of every
    pair of them converges below 1."""
    grams = (e @ e.t() if e.shape[0] <= e.shape[1] else e.t() @ e for e in embeddings)
    return lam * max(float(torch.linalg.eigvalsh(g.detach().double()).max()) for g in grams)


def series_lambda(embeddings: list[torch.Tensor], eps: float = 64.0, warmup: float = 1.0,
                  max_radius: float = 1.0) -> tuple[float, float]:
    """(lambda, radius) for these embeddings: MEC's lambda where its series' radius is below
    ``max_radius``, else the guaranteed one; :class:`SeriesDivergenceError` if neither converges
    (a batch collapsed onto one direction)."""
    shape = embeddings[0].shape
    lam = mec_lambda(*shape, eps, warmup)
    radius = series_radius(embeddings, lam)
    if not radius < max_radius:
        lam = mec_lambda(*shape, eps, warmup, guaranteed=True)
        radius = series_radius(embeddings, lam)
    if not radius < max_radius:
        raise SeriesDivergenceError(
            f"the coding-length series diverges (spectral radius {radius:.3g}, max_radius "
            f"{max_radius}): the embeddings have collapsed onto one direction (lower the "
            "learning rate or lambda1)")
    return lam, radius


def coding_loss(target: torch.Tensor, others: list[torch.Tensor], lam: float, eps: float,
                order: int) -> torch.Tensor:
    """-mu sum_o S(target, o) with MEC's mu and the MEC scaling: c / (m lam) x -sum_o S."""
    m, d = target.shape
    series = sum(coding_series(target, other, lam, order) for other in others)
    return -mec_scale(m, d, eps) / (m * lam) * series


def comp_loss(z_hat: torch.Tensor, order: int = 4, eps: float = 64.0, warmup: float = 1.0,
              max_radius: float = 1.0) -> torch.Tensor:
    """L_comp (eq. 6): minus the coding length of the comprehensive embedding."""
    e = mec_embedding(z_hat)
    lam, _ = series_lambda([e], eps, warmup, max_radius)
    return coding_loss(e, [e], lam, eps, order)


def mcr_terms(z_hat: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, order: int = 4,
              eps: float = 64.0, warmup: float = 1.0, max_radius: float = 1.0
              ) -> tuple[torch.Tensor, float, float]:
    """(L_mcr (eq. 7), its lambda, its series' radius): pulls each view's embedding matrix
    towards the comprehensive one."""
    e, e1, e2 = mec_embedding(z_hat), mec_embedding(z1, False), mec_embedding(z2, False)
    lam, radius = series_lambda([e, e1, e2], eps, warmup, max_radius)
    return coding_loss(e, [e1, e2], lam, eps, order), lam, radius


def mcr_loss(z_hat: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, order: int = 4,
             eps: float = 64.0, warmup: float = 1.0, max_radius: float = 1.0) -> torch.Tensor:
    """L_mcr (eq. 7)."""
    return mcr_terms(z_hat, z1, z2, order, eps, warmup, max_radius)[0]


class CompMod(nn.Module):
    """g_xi: [h^1, h^2] (2d') -> d' -> d, the comprehensive embedding: the paper's "multi-layer
    linear network 2d'-d'-d" with a ReLU between its layers and no normalisation layer."""

    def __init__(self, feature_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * feature_dim, feature_dim), nn.ReLU(inplace=True),
                                 nn.Linear(feature_dim, out_dim))

    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([h1, h2], dim=1))


class MCR(BilevelRegularizer):
    """CompMod + MCR on SimCLR, BYOL or Barlow Twins: L_ssl + lambda1 L_mcr, meta step for xi."""

    DEFAULTS = {"lambda1": 0.01, "lambda2": 0.1, "order": 4, "eps": 64.0, "xi_step": "backbone",
                "meta_lr": 1e-3, "meta_every": 1, "max_radius": 1.0}

    def __init__(self, method: Method, cfg: Any = None) -> None:
        super().__init__(method, cfg)
        require_method("mcr", method, ("simclr", "byol", "barlow_twins"))
        opts = options("mcr", cfg, self.DEFAULTS)
        if opts["xi_step"] not in ("backbone", "adam"):
            raise ConfigError(f"--regularizer-arg xi_step={opts['xi_step']}: choose backbone or "
                              "adam")
        self.lambda1, self.lambda2 = opts["lambda1"], opts["lambda2"]
        self.order, self.eps, self.meta_every = int(opts["order"]), opts["eps"], \
            int(opts["meta_every"])
        self.max_radius, self.xi_step = opts["max_radius"], opts["xi_step"]
        self.compmod = CompMod(method.feature_dim, output_dim(method.projector))
        if self.xi_step == "adam":
            self.meta_optimizer = torch.optim.Adam(self.compmod.parameters(), lr=opts["meta_lr"])
        self.radius, self.lam = float("nan"), float("nan")  # of the last L_mcr

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Algorithm 1 steps xi as theta and phi (eq. 9, rate r): ``xi_step=backbone`` builds
        xi's optimizer as the loop's (its class and first param group's settings)."""
        if self.xi_step == "backbone":
            settings = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
            self.meta_optimizer = type(optimizer)(self.compmod.parameters(), lr=settings["lr"])
            self.meta_optimizer.param_groups[0].update(settings)

    def warmup(self, progress: float) -> float:
        """The fraction of MEC's lambda warm-up done at ``progress``."""
        return progress / warmup_fraction(MEC_WARMUP_EPOCHS, MEC_EPOCHS, self.run_epochs())

    def _mcr(self, out: Outputs, warmup: float, step: int | None) -> torch.Tensor:
        z_hat = self.compmod(out["h1"], out["h2"])
        try:
            mcr, self.lam, self.radius = mcr_terms(z_hat, out["z1"], out["z2"], self.order,
                                                   self.eps, warmup, self.max_radius)
        except SeriesDivergenceError as err:
            raise SeriesDivergenceError(f"--regularizer mcr: at step {step} {err}") from None
        return mcr

    def regularize(self, base_loss: torch.Tensor, method: Method, batch: dict[str, torch.Tensor],
                   out: Outputs, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # xi is not in the main optimizer, so it stays fixed here (its stray .grad is overwritten
        # by the meta step).
        step = round(progress * self.total_steps) if self.total_steps else None
        mcr = self._mcr(out, self.warmup(progress), step)
        return base_loss + self.lambda1 * mcr, {
            "ssl": base_loss.detach(), "mcr": mcr.detach(),
            "mcr_radius": torch.tensor(self.radius), "mcr_lambda": torch.tensor(self.lam)}

    def meta_objectives(self, batch: dict[str, torch.Tensor], step: int
                        ) -> tuple[Objective, Objective]:
        warmup = self.warmup(self.progress(step))

        def inner(out: Outputs) -> torch.Tensor:
            return out["loss"] + self.lambda1 * self._mcr(out, warmup, step)

        def outer(out: Outputs) -> torch.Tensor:
            z_hat = self.compmod(out["h1"], out["h2"])
            try:
                comp = comp_loss(z_hat, self.order, self.eps, warmup, self.max_radius)
            except SeriesDivergenceError as err:
                raise SeriesDivergenceError(f"--regularizer mcr: at step {step} {err}") from None
            return out["loss"] + self.lambda2 * comp

        return inner, outer

    def meta_step(self, method: Method, batch: dict[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer, lr: float, step: int) -> dict[str, float]:
        if self.meta_optimizer is None:  # a module stepped outside the loop
            self.bind_optimizer(optimizer)
        if self.xi_step == "backbone":  # the loop's rate at this step
            for group in self.meta_optimizer.param_groups:
                group["lr"] = optimizer.param_groups[0]["lr"]
        return {**super().meta_step(method, batch, optimizer, lr, step),
                "mcr_radius": self.radius}
