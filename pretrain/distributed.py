"""The few collective operations the methods and the loop need; all are no-ops in one process.

Losses that compare samples across the batch (SimCLR's negatives, Barlow Twins' cross-correlation)
gather the other ranks' embeddings *with gradients*: the gather's backward sums the incoming
gradients over ranks, so with DDP's gradient averaging a ``W``-rank run computes exactly the
gradient of one process on the combined batch. The backward is itself differentiable (a
virtual step with ``create_graph=True`` differentiates through it). Written here rather than
taken from ``torch.distributed.nn.functional``, which torch 2.14 deprecates.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_env(device: str) -> None:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); nccl on CUDA, else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its adjoint is again a sum over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        x = x.clone().contiguous()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return _AllReduceSum.apply(grad)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        n = grad.shape[0] // world_size()
        return _AllReduceSum.apply(grad)[rank() * n:(rank() + 1) * n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenation of every rank's ``x`` along dim 0 (rank order; equal sizes), differentiable."""
    return _GatherWithGrad.apply(x) if is_distributed() else x


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """Average a (detached) tensor over ranks, e.g. the loss for logging and the NaN check."""
    x = x.detach().clone()
    if is_distributed():
        dist.all_reduce(x)
        x /= world_size()
    return x


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average ``.grad`` over ranks for parameters outside the DDP-wrapped module."""
    if not is_distributed():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def all_reduce_mean_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Mean over ranks, differentiable (twice: its backward is again an all-reduce)."""
    return _AllReduceSum.apply(x) / world_size() if is_distributed() else x
