"""The shared virtual step is the real optimizer's next step: equal to ``optimizer.step()`` on a
copy, for every optimizer the suite trains with, from a fresh state and after a few steps, with
several param groups; finite derivatives where the step is not differentiable; its meta-gradient
equals finite differences of the objective through the real step."""
from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from pretrain.optim import LARS
from pretrain.regularizers.virtual_step import functional_forward, named_trainable, virtual_step


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.out = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.bn(torch.tanh(self.fc(x))))


def _groups(model: nn.Module, second: dict) -> list[dict]:
    """Weight matrices in the first group, the 1-D parameters in a second with its own settings."""
    return [{"params": [p for p in model.parameters() if p.ndim > 1]},
            {"params": [p for p in model.parameters() if p.ndim == 1], **second}]


OPTIMIZERS: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "lars": lambda m: LARS(_groups(m, {"lr": 0.05, "eta": 0.02}), lr=0.3, weight_decay=1e-2,
                           momentum=0.9, eta=0.001),
    "sgd": lambda m: torch.optim.SGD(_groups(m, {"lr": 0.05, "weight_decay": 0.0}), lr=0.3,
                                     momentum=0.9, weight_decay=1e-2),
    "sgd-nesterov": lambda m: torch.optim.SGD(_groups(m, {"momentum": 0.5}), lr=0.3,
                                              momentum=0.9, weight_decay=1e-2, nesterov=True),
    "sgd-dampening": lambda m: torch.optim.SGD(_groups(m, {"lr": 0.1}), lr=0.3, momentum=0.9,
                                               dampening=0.3),
    "sgd-plain": lambda m: torch.optim.SGD(_groups(m, {"lr": 0.1}), lr=0.3),
    "adam": lambda m: torch.optim.Adam(_groups(m, {"lr": 0.02, "betas": (0.8, 0.99)}), lr=0.05,
                                       weight_decay=1e-2),
    "adamw": lambda m: torch.optim.AdamW(_groups(m, {"weight_decay": 0.0}), lr=0.05,
                                         weight_decay=0.1),
    "adam-amsgrad": lambda m: torch.optim.Adam(_groups(m, {"lr": 0.02}), lr=0.05, amsgrad=True),
}


def real_step(model: nn.Module, optimizer: torch.optim.Optimizer,
              loss_of: Callable[[nn.Module], torch.Tensor]) -> nn.Module:
    """A copy of ``model`` after ``optimizer.step()`` (on a copy of the optimizer and its state)
    with the gradient of ``loss_of(copy)``; the originals are untouched."""
    model_copy, optimizer_copy = copy.deepcopy((model, optimizer))
    params = [p for p in model_copy.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_of(model_copy), params, allow_unused=True)
    for p, g in zip(params, grads):
        p.grad = g
    optimizer_copy.step()
    return model_copy


def _setup(kind: str, steps_before: int):
    torch.manual_seed(0)
    model = _Tiny().double()
    optimizer = OPTIMIZERS[kind](model)
    for _ in range(steps_before):  # give the optimizer a state (momenta, moments, step count)
        optimizer.zero_grad()
        model(torch.randn(8, 4, dtype=torch.float64)).pow(2).mean().backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    x, target = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    return model, optimizer, x, target


@pytest.mark.parametrize("steps_before", [0, 3])
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_virtual_step_is_the_real_optimizers_next_step(kind: str, steps_before: int) -> None:
    model, optimizer, x, target = _setup(kind, steps_before)
    state_before = copy.deepcopy(optimizer.state_dict())
    params = named_trainable(model)
    inner = (functional_forward(model, params, x) - target).pow(2).mean()
    stepped = virtual_step(inner, params, optimizer)
    real = real_step(model, optimizer, lambda m: (m(x) - target).pow(2).mean())
    for name, p in real.named_parameters():
        virtual_update = (stepped[name] - params[name]).detach()
        real_update = p.detach() - params[name].detach()
        assert real_update.abs().max() > 0, name
        error = (virtual_update - real_update).abs().max() / real_update.abs().max()
        assert error < 1e-6, (kind, name, float(error))
    # The virtual step leaves the optimizer's state and the real parameters alone.
    assert str(optimizer.state_dict()) == str(state_before)


def test_an_unknown_optimizer_is_named() -> None:
    model = _Tiny()
    params = named_trainable(model)
    loss = functional_forward(model, params, torch.randn(4, 4)).sum()
    with pytest.raises(TypeError, match="no rule for the optimizer RMSprop"):
        virtual_step(loss, params, torch.optim.RMSprop(model.parameters()))


@pytest.mark.parametrize("kind", ["lars", "adam"])
def test_derivatives_stay_finite_where_the_step_is_not_differentiable(kind: str) -> None:
    """A zero weight matrix with a zero gradient (LARS's norms at 0) and Adam's fresh second
    moment at 0 (its square root): the value is the real step's, the derivative finite."""
    model = nn.Linear(3, 2, bias=False).double()
    nn.init.zeros_(model.weight)
    optimizer = OPTIMIZERS[kind](nn.Sequential(model))
    phi = torch.zeros((), dtype=torch.float64, requires_grad=True)
    params = named_trainable(model)
    x = torch.randn(5, 3, dtype=torch.float64)
    inner = phi * functional_forward(model, params, x).sum()            # gradient phi * sum(x)
    stepped = virtual_step(inner, params, optimizer)
    torch.testing.assert_close(stepped["weight"], torch.zeros_like(model.weight))
    (grad,) = torch.autograd.grad(stepped["weight"].pow(2).sum() + stepped["weight"].sum(), phi)
    assert torch.isfinite(grad)


def _outer_loss(model, phi, x, x_outer, target, optimizer) -> torch.Tensor:
    params = named_trainable(model)
    inner = (functional_forward(model, params, x) * phi - target).pow(2).mean()
    stepped = virtual_step(inner, params, optimizer)
    return functional_forward(model, stepped, x_outer).pow(2).mean()


@pytest.mark.parametrize("kind", ["lars", "adamw"])
def test_meta_gradient_matches_finite_differences_through_the_real_step(kind: str) -> None:
    model, optimizer, x, _ = _setup(kind, steps_before=2)
    phi = torch.randn(2, dtype=torch.float64, requires_grad=True)  # meta parameter
    x_outer, target = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    buffers_before = {n: b.clone() for n, b in model.named_buffers()}
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}

    (grad,) = torch.autograd.grad(_outer_loss(model, phi, x, x_outer, target, optimizer), [phi])

    def objective(phi_value: torch.Tensor) -> float:  # the outer loss after a real step
        stepped = real_step(model, optimizer,
                            lambda m: (m(x) * phi_value - target).pow(2).mean())
        return stepped(x_outer).pow(2).mean().item()

    eps = 1e-6
    numeric = torch.tensor([(objective(phi.detach() + eps * e) - objective(phi.detach() - eps * e))
                            / (2 * eps) for e in torch.eye(2, dtype=torch.float64)])
    assert (grad - numeric).norm() / numeric.norm() < 1e-4, (grad, numeric)
    assert all(torch.equal(b, buffers_before[n]) for n, b in model.named_buffers())
    assert all(torch.equal(p, params_before[n]) for n, p in model.named_parameters())
