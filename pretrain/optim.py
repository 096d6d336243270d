"""Optimizers (SGD, LARS, Adam) and the warm-up + cosine learning-rate schedule.

The schedule is a pure function of the step, so resuming needs only the step (no scheduler state).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as used by SimCLR, BYOL and Barlow Twins: SGD with momentum whose
    update of each weight matrix is scaled by ``eta * ||w|| / ||g + wd * w||``. Biases and
    normalisation parameters (1-D tensors) get neither weight decay nor the adaptation."""

    def __init__(self, params: Iterable, lr: float, weight_decay: float = 0.0,
                 momentum: float = 0.9, eta: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      eta=eta))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(update)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(param_norm > 0, torch.where(
                        update_norm > 0, group["eta"] * param_norm / update_norm, one), one)
                    update = update.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])


def build_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float,
                    momentum: float) -> torch.optim.Optimizer:
    """``lr`` is the actual (already batch-scaled) peak learning rate."""
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return LARS(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd, lars or adam")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up from ``peak_lr / warmup_steps`` to ``peak_lr``, then cosine decay to 0."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
