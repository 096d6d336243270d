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
from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist

from pretrain.cli import InputError, number

# What torchrun (and torch.distributed.launch) sets for each process it starts: all or none.
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def launched() -> bool:
    """This process joined a process group: started by torchrun, even as its only rank (a
    one-process torchrun run takes the DDP path too, so that one GPU proves it)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def max_processes() -> int:
    """How many processes ``--gpus`` may start on this machine: one per visible CUDA device, or
    without CUDA one per CPU core (gloo processes)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else (os.cpu_count() or 1)


# an argparse type for --gpus: processes to start, 1..max_processes() (checked when parsed)
PROCESS_COUNT = number(int, 1, high=max_processes)


def launcher_ranks(environ: Mapping[str, str] = os.environ) -> tuple[int, int, int] | None:
    """(rank, local rank, world size) from torchrun's variables, or None when none is set.

    Some of them without the rest (e.g. ``LOCAL_RANK`` left over from another job) or values that
    are not consistent ranks are refused on one line, before any process group is joined (a
    group missing its other ranks waits for them for half an hour)."""
    present = {key: environ[key] for key in TORCHRUN_VARIABLES if key in environ}
    if not present:
        return None
    given = " ".join(f"{key}={value!r}" for key, value in present.items())
    fix = ("start the command under torchrun (torchrun --nproc-per-node N -m pretrain.train ...)"
           f" or unset {', '.join(present)}")
    missing = [key for key in TORCHRUN_VARIABLES if key not in present]
    if missing:
        raise InputError(f"environment {given} without {', '.join(missing)}: torchrun sets all "
                         f"of {', '.join(TORCHRUN_VARIABLES)}; {fix}")
    try:
        rank_, local, world, port = (int(present[key]) for key in
                                     ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"))
    except ValueError:
        raise InputError(f"environment {given}: RANK, LOCAL_RANK, WORLD_SIZE and MASTER_PORT "
                         f"must be whole numbers; {fix}") from None
    if not (world >= 1 and 0 <= local <= rank_ < world and 0 < port < 65536):
        raise InputError(f"environment {given}: needs 0 <= LOCAL_RANK <= RANK < WORLD_SIZE and a "
                         f"port in 1..65535; {fix}")
    return rank_, local, world


def init_from_env(device: str) -> None:
    """Join the process group torchrun describes (any ``WORLD_SIZE``); nccl on CUDA, else gloo."""
    ranks = launcher_ranks()
    if ranks is None or dist.is_initialized():
        return
    if device.startswith("cuda") and ranks[1] >= torch.cuda.device_count():
        raise InputError(f"LOCAL_RANK={ranks[1]} but {torch.cuda.device_count()} CUDA device(s) "
                         "are visible; start at most that many processes per machine "
                         "(torchrun --nproc-per-node)")
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
