"""The one "virtual step" shared by the bi-level regularizers (ICL-MSR, MCR, MetaMask).

A bi-level regularizer's meta parameters phi shape an inner loss L_in(theta, phi). Its meta step
takes a virtual step of the model's parameters theta with the graph kept,

    theta' = U(theta, grad_theta L_in(theta, phi); optimizer state, param group)

and updates phi by differentiating an outer loss through it: d L_out(theta'(phi), phi) / d phi.

U is exactly the step the training's own optimizer would take next: the loop calls the meta step
right after ``optimizer.step()``, so the optimizer's state (momentum buffers, Adam's moments and
step count) already holds that step, and U is the next step from this state with the inner gradient
in place of ``p.grad``, with each parameter's own param group (lr, weight decay, momentum, ...).
The rules are written out for :class:`pretrain.optim.LARS`, ``torch.optim.SGD`` (momentum,
dampening, Nesterov, weight decay), ``torch.optim.Adam`` and ``torch.optim.AdamW`` (coupled or
decoupled weight decay, bias correction, AMSGrad); any other optimizer is an error naming it. The
state and the hyperparameters are constants of the virtual step, only the inner gradient carries
the graph. Where the step is not differentiable (a norm or a square root at 0) the derivative is
taken as 0, so the meta-gradient stays finite; the value is exact.

Written once, on ``torch.func.functional_call``: the model is never deep-copied, the real
parameters and the optimizer's state are untouched, and BatchNorm running statistics are not
updated by the virtual pass (it runs on clones of the buffers, which are then discarded). Under
DDP the inner gradients are averaged across ranks with an autograd-aware all-reduce (as DDP
averages the real gradients), so every rank takes the same virtual step, and the meta gradients are
averaged before the meta optimizer steps.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pretrain.distributed import all_reduce_mean_with_grad, average_gradients
from pretrain.methods.base import Method, Regularizer
from pretrain.optim import LARS

Outputs = dict[str, Tensor]
Objective = Callable[[Outputs], Tensor]
StepRule = Callable[[dict[str, Any], dict[str, Any], Tensor, Tensor], Tensor]


def safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(x) for x >= 0, with derivative 0 instead of infinity where x is 0."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)


def _lars(group: dict[str, Any], state: dict[str, Any], p: Tensor, grad: Tensor) -> Tensor:
    """:class:`pretrain.optim.LARS`: trust ratio and weight decay for weights with ndim > 1."""
    update = grad
    if p.ndim > 1:
        update = grad + group["weight_decay"] * p
        param_norm, update_norm = p.detach().norm(), safe_sqrt(update.pow(2).sum())
        both = (param_norm > 0) & (update_norm > 0)
        trust = torch.where(both, group["eta"] * param_norm
                            / torch.where(update_norm > 0, update_norm, 1.0), 1.0)
        update = update * trust
    buf = state.get("momentum_buffer")  # LARS starts from a zero buffer
    buf = update if buf is None else group["momentum"] * buf + update
    return p - group["lr"] * buf


def _sgd(group: dict[str, Any], state: dict[str, Any], p: Tensor, grad: Tensor) -> Tensor:
    """``torch.optim.SGD`` (its single-tensor code path, written out)."""
    d_p = -grad if group.get("maximize", False) else grad
    if group["weight_decay"] != 0:
        d_p = d_p + group["weight_decay"] * p
    momentum = group["momentum"]
    if momentum != 0:
        buf = state.get("momentum_buffer")
        # torch starts the buffer at the first gradient itself (no dampening on that step)
        buf = d_p if buf is None else momentum * buf + (1 - group["dampening"]) * d_p
        d_p = d_p + momentum * buf if group["nesterov"] else buf
    return p - group["lr"] * d_p


def _adam(group: dict[str, Any], state: dict[str, Any], p: Tensor, grad: Tensor) -> Tensor:
    """``torch.optim.Adam`` / ``AdamW``: bias-corrected moments, coupled or decoupled decay."""
    d_p = -grad if group.get("maximize", False) else grad
    lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], \
        group["weight_decay"]
    lr, beta1, beta2 = (float(v) for v in (lr, beta1, beta2))  # tensor-valued settings allowed
    base = p
    if decay != 0:
        if group.get("decoupled_weight_decay", False):
            base = p * (1 - lr * decay)
        else:
            d_p = d_p + decay * p
    step = float(state["step"]) + 1 if "step" in state else 1.0
    exp_avg = state.get("exp_avg", torch.zeros_like(p))
    exp_avg_sq = state.get("exp_avg_sq", torch.zeros_like(p))
    exp_avg = exp_avg + (1 - beta1) * (d_p - exp_avg)             # torch's lerp
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * d_p * d_p
    if group.get("amsgrad", False):
        exp_avg_sq = torch.maximum(state.get("max_exp_avg_sq", torch.zeros_like(p)), exp_avg_sq)
    denom = safe_sqrt(exp_avg_sq) / (1 - beta2 ** step) ** 0.5 + eps
    return base - lr / (1 - beta1 ** step) * exp_avg / denom


#: The step of each optimizer the suite trains with, keyed by its exact class (a subclass may
#: change the step, so it is not assumed to share its parent's rule).
STEP_RULES: dict[type, StepRule] = {
    LARS: _lars,
    torch.optim.SGD: _sgd,
    torch.optim.Adam: _adam,
    torch.optim.AdamW: _adam,
}


def step_rule(optimizer: torch.optim.Optimizer) -> StepRule:
    rule = STEP_RULES.get(type(optimizer))
    if rule is None:
        known = ", ".join(c.__name__ for c in STEP_RULES)
        raise TypeError(f"virtual step: no rule for the optimizer {type(optimizer).__name__}; "
                        f"the bi-level regularizers know {known} (add its step to STEP_RULES in "
                        "pretrain/regularizers/virtual_step.py)")
    return rule


def virtual_step(inner_loss: Tensor, params: dict[str, Tensor],
                 optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """``params`` after the step ``optimizer`` would take next with ``grad inner_loss`` as the
    gradient, differentiable w.r.t. anything the inner gradient depends on.

    ``params`` maps functional names to the real parameters (its values are looked up by identity
    in ``optimizer``'s param groups and state). A parameter the loss does not reach, or that the
    optimizer does not hold, is returned unchanged, as the real optimizer would leave it.
    """
    rule = step_rule(optimizer)
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    names = list(params)
    grads = torch.autograd.grad(inner_loss, [params[n] for n in names], create_graph=True,
                                allow_unused=True)
    stepped = {}
    for name, grad in zip(names, grads):
        p = params[name]
        if grad is None or id(p) not in groups:
            stepped[name] = p
            continue
        stepped[name] = rule(groups[id(p)], optimizer.state.get(p, {}), p,
                             all_reduce_mean_with_grad(grad))
    return stepped


def functional_forward(module: nn.Module, params: dict[str, Tensor], *args: Any,
                       **kwargs: Any) -> Any:
    """Run ``module`` with ``params`` substituted (others as they are), leaving buffers intact."""
    buffers = {n: b.clone() for n, b in module.named_buffers()}
    return torch.func.functional_call(module, ({**params}, buffers), args, kwargs, strict=False)


def named_trainable(module: nn.Module) -> dict[str, Tensor]:
    """``{name: parameter}`` of the trainable parameters (the keys functional_call uses)."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def bilevel_update(method: nn.Module, batch: dict[str, Tensor], inner: Objective,
                   outer: Objective, meta_optimizer: torch.optim.Optimizer,
                   optimizer: torch.optim.Optimizer,
                   feature_mask: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
    """One meta step: virtual step of ``method``'s trainable parameters on ``inner(out)``, then
    ``meta_optimizer``'s parameters descend ``outer(out')`` through it. Returns scalars to log."""
    params = named_trainable(method)
    x1, x2 = batch["x1"], batch["x2"]
    out = functional_forward(method, params, x1, x2, feature_mask=feature_mask)
    inner_loss = inner(out)
    stepped = virtual_step(inner_loss, params, optimizer)
    outer_loss = outer(functional_forward(method, stepped, x1, x2, feature_mask=feature_mask))
    meta_params = [p for g in meta_optimizer.param_groups for p in g["params"]]
    grads = torch.autograd.grad(outer_loss, meta_params, allow_unused=True)
    for p, g in zip(meta_params, grads):
        p.grad = torch.zeros_like(p) if g is None else g
    average_gradients(meta_params)
    meta_optimizer.step()
    meta_optimizer.zero_grad(set_to_none=True)
    return {"meta_inner": inner_loss.item(), "meta_outer": outer_loss.item()}


class BilevelRegularizer(Regularizer):
    """A regularizer whose meta parameters learn through the virtual step (hook d).

    Subclasses define :meth:`meta_objectives`: the inner and outer losses of the meta step at
    ``step``, as functions of the method's outputs (with the meta parameters inside). The meta step
    and the tests that check it (tests/test_regularizers.py) take them from there. ``lr`` is not
    read: the virtual step uses each param group's own learning rate, which the loop has set.
    """

    meta_every = 1

    def meta_objectives(self, batch: dict[str, Tensor], step: int
                        ) -> tuple[Objective, Objective]:
        raise NotImplementedError

    def meta_step(self, method: Method, batch: dict[str, Tensor],
                  optimizer: torch.optim.Optimizer, lr: float, step: int) -> dict[str, float]:
        inner, outer = self.meta_objectives(batch, step)
        return bilevel_update(method, batch, inner, outer, self.meta_optimizer, optimizer,
                              self.feature_mask)
