"""The shared virtual step: its meta-gradient equals a finite-difference estimate."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrain.regularizers.virtual_step import functional_forward, named_trainable, virtual_step


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.out = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.bn(self.fc(x))))


def _setup(optimizer_kind: str):
    torch.manual_seed(0)
    model = _Tiny().double()
    phi = torch.randn(2, dtype=torch.float64, requires_grad=True)  # meta parameter
    x, x_outer = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    target = torch.randn(8, 2, dtype=torch.float64)
    optimizer = None
    if optimizer_kind == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        model(x).pow(2).mean().backward()  # give Adam non-trivial moments
        optimizer.step()
        optimizer.zero_grad()
    return model, phi, x, x_outer, target, optimizer


def _outer_loss(model, phi, x, x_outer, target, optimizer) -> torch.Tensor:
    params = named_trainable(model)
    inner = (functional_forward(model, params, x) * phi - target).pow(2).mean()
    stepped = virtual_step(inner, params, lr=0.3, optimizer=optimizer)
    return functional_forward(model, stepped, x_outer).pow(2).mean()


@pytest.mark.parametrize("optimizer_kind", ["sgd", "adam"])
def test_meta_gradient_matches_finite_differences(optimizer_kind: str) -> None:
    model, phi, x, x_outer, target, optimizer = _setup(optimizer_kind)
    buffers_before = {n: b.clone() for n, b in model.named_buffers()}
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}

    (grad,) = torch.autograd.grad(_outer_loss(model, phi, x, x_outer, target, optimizer), [phi])

    eps = 1e-6
    numeric = torch.zeros_like(phi)
    for i in range(phi.numel()):
        shift = torch.zeros_like(phi)
        shift[i] = eps
        up = _outer_loss(model, (phi + shift).detach().requires_grad_(), x, x_outer, target,
                         optimizer)
        down = _outer_loss(model, (phi - shift).detach().requires_grad_(), x, x_outer, target,
                           optimizer)
        numeric[i] = (up - down).item() / (2 * eps)
    relative = (grad - numeric).norm() / numeric.norm()
    assert relative < 1e-3, (grad, numeric)
    assert grad.abs().sum() > 0
    # The virtual pass changes neither the real parameters nor BN's running statistics.
    assert all(torch.equal(b, buffers_before[n]) for n, b in model.named_buffers())
    assert all(torch.equal(p, params_before[n]) for n, p in model.named_parameters())
