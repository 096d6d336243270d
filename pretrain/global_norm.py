"""BatchNorm over the global batch under DDP, on any device and twice differentiable.

``nn.SyncBatchNorm`` runs on CUDA only and its backward is not differentiable, so it can neither
serve the CPU (gloo) runs nor the bi-level regularizers' virtual step (``create_graph=True``).
:class:`GlobalBatchNorm` computes the batch mean and variance of every rank's rows with the
autograd-aware all-reduce of :mod:`pretrain.distributed` (every rank holds the same number of
rows, as the loop's sampler guarantees), so W ranks normalise exactly as one process does on the
combined batch, and their gradients (averaged by DDP) are that process's. In one process it is
``nn.BatchNorm`` to the last bit of its formula.
"""
from __future__ import annotations

import torch
from torch import nn

from pretrain.distributed import all_reduce_mean_with_grad, is_distributed, world_size


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d whose training statistics are those of the batch over all ranks."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4, 5):
            raise ValueError(f"GlobalBatchNorm: expected a 2-5-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = all_reduce_mean_with_grad(x.mean(dim=dims))
        square = all_reduce_mean_with_grad(x.pow(2).mean(dim=dims))
        var = square - mean.pow(2)
        if self.track_running_stats:
            count = x.numel() // x.shape[1] * world_size()
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None \
                    else 1 / float(self.num_batches_tracked)  # torch's cumulative average
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / max(1, count - 1), momentum)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def globalize_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by a :class:`GlobalBatchNorm` that holds the same
    parameter and buffer objects (an optimizer built before keeps stepping them); the children
    are replaced in place, the root returned."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and \
            not isinstance(module, GlobalBatchNorm):
        norm = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        for name, tensor in [*module.named_parameters(recurse=False),
                             *module.named_buffers(recurse=False)]:
            setattr(norm, name, tensor)
        return norm.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, globalize_batch_norm(child))
    return module


def global_batch_norm(method: nn.Module, regularizer: nn.Module, cuda: bool, sync_bn: bool
                      ) -> tuple[nn.Module, nn.Module]:
    """The BatchNorm layers of a DDP run: the regularizer's always over the global batch (its
    losses are defined on it), the method's with ``sync_bn``: SyncBatchNorm on CUDA, except with
    a bi-level regularizer (its virtual step differentiates the backward, which SyncBatchNorm's
    is not), else :class:`pretrain.global_norm.GlobalBatchNorm`."""
    regularizer = globalize_batch_norm(regularizer)
    if sync_bn:
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method) \
            if cuda and not regularizer.meta_every else globalize_batch_norm(method)
    return method, regularizer
