"""The one "virtual step" shared by the bi-level regularizers (ICL-MSR, MCR, MetaMask).

A bi-level regularizer's meta parameters phi shape the inner loss L_in(theta, phi). Its meta step
takes a virtual optimizer step of theta with the graph kept,

    theta' = theta - lr * step(grad_theta L_in(theta, phi))      (SGD or Adam, differentiable)

and updates phi by differentiating an outer loss through it: d L_out(theta'(phi)) / d phi.

Written once, on ``torch.func.functional_call``: the model is never deep-copied, the real
parameters are untouched, and BatchNorm running statistics are not updated by the virtual pass
(it runs on clones of the buffers, which are then discarded). Under DDP the inner gradients are
averaged across ranks with an autograd-aware all-reduce, so every rank takes the same virtual
step, and the meta gradients are averaged before the meta optimizer steps.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pretrain.distributed import all_reduce_mean_with_grad, average_gradients

Outputs = dict[str, torch.Tensor]


def virtual_step(inner_loss: torch.Tensor, params: dict[str, torch.Tensor], lr: float,
                 optimizer: torch.optim.Optimizer | None = None) -> dict[str, torch.Tensor]:
    """Return ``params`` after one virtual step on ``inner_loss``, differentiable w.r.t. anything
    the inner gradient depends on (``create_graph=True``).

    With an ``Adam``/``AdamW`` ``optimizer`` the step uses its moment estimates for these
    parameters (the step the real optimizer would take, weight decay left out); otherwise plain
    SGD. Parameters the loss does not reach are returned unchanged.
    """
    names = list(params)
    grads = torch.autograd.grad(inner_loss, [params[n] for n in names], create_graph=True,
                                allow_unused=True)
    grads = [all_reduce_mean_with_grad(torch.zeros_like(params[n]) if g is None else g)
             for n, g in zip(names, grads)]
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        steps = _adam_directions(optimizer, [params[n] for n in names], grads)
    else:
        steps = grads
    return {n: params[n] - lr * s for n, s in zip(names, steps)}


def _adam_directions(optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                     grads: list[torch.Tensor]) -> list[torch.Tensor]:
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    eps = group["eps"]
    directions = []
    for p, g in zip(params, grads):
        state = optimizer.state.get(p, {})
        step = float(state.get("step", 0)) + 1
        m = beta1 * state.get("exp_avg", torch.zeros_like(g)) + (1 - beta1) * g
        v = beta2 * state.get("exp_avg_sq", torch.zeros_like(g)) + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** step)
        v_hat = v / (1 - beta2 ** step)
        # +eps^2 inside the sqrt keeps the derivative finite where v is 0 (unused parameters).
        directions.append(m_hat / ((v_hat + eps * eps).sqrt() + eps))
    return directions


def functional_forward(module: nn.Module, params: dict[str, torch.Tensor], *args: Any,
                       **kwargs: Any) -> Any:
    """Run ``module`` with ``params`` substituted (others as they are), leaving buffers intact."""
    buffers = {n: b.clone() for n, b in module.named_buffers()}
    return torch.func.functional_call(module, ({**params}, buffers), args, kwargs, strict=False)


def named_trainable(module: nn.Module) -> dict[str, torch.Tensor]:
    """``{name: parameter}`` of the trainable parameters (the keys functional_call uses)."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def bilevel_update(method: nn.Module, batch: dict[str, torch.Tensor],
                   inner: Callable[[Outputs], torch.Tensor],
                   outer: Callable[[Outputs], torch.Tensor],
                   meta_optimizer: torch.optim.Optimizer, lr: float,
                   optimizer: torch.optim.Optimizer | None = None,
                   feature_mask: Callable[[torch.Tensor], torch.Tensor] | None = None
                   ) -> dict[str, float]:
    """One meta step: virtual step of ``method``'s trainable parameters on ``inner(out)``, then
    ``meta_optimizer``'s parameters descend ``outer(out')`` through it. Returns scalars to log."""
    params = named_trainable(method)
    x1, x2 = batch["x1"], batch["x2"]
    out = functional_forward(method, params, x1, x2, feature_mask=feature_mask)
    inner_loss = inner(out)
    stepped = virtual_step(inner_loss, params, lr, optimizer)
    outer_loss = outer(functional_forward(method, stepped, x1, x2, feature_mask=feature_mask))
    meta_params = [p for g in meta_optimizer.param_groups for p in g["params"]]
    grads = torch.autograd.grad(outer_loss, meta_params, allow_unused=True)
    for p, g in zip(meta_params, grads):
        p.grad = torch.zeros_like(p) if g is None else g
    average_gradients(meta_params)
    meta_optimizer.step()
    meta_optimizer.zero_grad(set_to_none=True)
    return {"meta_inner": inner_loss.item(), "meta_outer": outer_loss.item()}
