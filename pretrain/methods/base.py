"""The two contracts the training loop relies on: :class:`Method` and :class:`Regularizer`.

A method's ``forward(x1, x2, feature_mask=None)`` returns a dict of the step's tensors with the
loss under ``"loss"``; ``loss(out)`` is a pure function of that dict (and of buffers such as MoCo's
queue), so ``torch.func.functional_call(method, params, (x1, x2))["loss"]`` recomputes the loss
with substituted parameters (the bi-level regularizers' virtual step). State that changes outside
the gradient step (EMA targets, the queue) changes only in ``after_step``, which the loop calls
once per real optimizer step and never in a virtual step.

How the loop uses a :class:`Regularizer` is documented in :mod:`pretrain.train`.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from pretrain.backbones import stage_outputs

Outputs = dict[str, torch.Tensor]
FeatureMask = Callable[[torch.Tensor], torch.Tensor]


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """Losses run in at least float32 (bf16 activations under autocast are upcast)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, batch_norm: bool = True
        ) -> nn.Sequential:
    """``layers`` linear layers; hidden ones followed by (BatchNorm and) ReLU."""
    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        blocks += [nn.Linear(dim, hidden_dim, bias=not batch_norm)]
        blocks += [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
        blocks += [nn.ReLU(inplace=True)]
        dim = hidden_dim
    blocks.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*blocks)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A momentum/target copy: same weights, no gradients."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online (parameters; buffers copied)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, 1.0 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


class Method(nn.Module):
    """A backbone, the method's heads, and its loss.

    ``forward`` returns at least: ``fmap1``/``fmap2`` (backbone res5 feature maps), ``h1``/``h2``
    (pooled backbone features, before any feature mask), ``z1``/``z2`` (projections) and ``loss``.
    ``feature_mask`` (a callable on ``h``, e.g. MetaMask's dimensional mask) is applied to the
    online branch's pooled features before the projector.
    """

    #: The paper's optimiser settings; ``lr`` is per 256 images (scaled linearly with the batch).
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: Method arguments that shrink the heads, for tests: a model that builds and steps in seconds.
    SMALL_ARGS: ClassVar[dict[str, Any]] = {}

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone, self.feature_dim = backbone, feature_dim

    def encode(self, x: torch.Tensor, backbone: nn.Module | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(res5 feature map, average-pooled feature h) of ``backbone`` (default: online)."""
        fmap = stage_outputs(backbone or self.backbone, x)["res5"]
        return fmap, fmap.mean(dim=(2, 3))

    def online_views(self, x1: torch.Tensor, x2: torch.Tensor,
                     feature_mask: FeatureMask | None) -> Outputs:
        """Both views through the online backbone and ``self.projector``."""
        out: Outputs = {}
        for i, x in (("1", x1), ("2", x2)):
            fmap, h = self.encode(x)
            out["fmap" + i], out["h" + i] = fmap, h
            out["z" + i] = self.projector(feature_mask(h) if feature_mask is not None else h)
        return out

    def forward_views(self, x1: torch.Tensor, x2: torch.Tensor,
                      feature_mask: FeatureMask | None = None) -> Outputs:
        raise NotImplementedError

    def loss(self, out: Outputs) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                feature_mask: FeatureMask | None = None) -> Outputs:
        out = self.forward_views(x1, x2, feature_mask)
        out["loss"] = self.loss(out)
        return out

    @torch.no_grad()
    def after_step(self, out: Outputs, progress: float) -> None:
        """No-grad updates after a real optimizer step; ``progress`` = steps done / total steps."""


class Regularizer(nn.Module):
    """The no-op regularizer (``--regularizer none``) and the hooks a regularizer overrides.

    Constructed as ``Class(method, cfg)``; options come from ``cfg.regularizer_args``.
    """

    #: The batch must carry the un-augmented image ``batch["plain"]``.
    needs_plain: ClassVar[bool] = False
    #: Run :meth:`meta_step` after every ``meta_every``-th regular step (0: never).
    meta_every: int = 0
    #: Optimizer of the meta parameters (saved and restored with the training state).
    meta_optimizer: torch.optim.Optimizer | None = None

    def __init__(self, method: Method | None = None, cfg: Any = None) -> None:
        super().__init__()
        #: Applied to the online pooled backbone features before the projector (hook b); a
        #: module assigned here is registered, so its parameters are saved with the regularizer.
        self.feature_mask: FeatureMask | None = None
        #: The run's length, from :meth:`set_schedule`; None for a module used outside the loop.
        self.steps_per_epoch: int | None = None
        self.total_steps: int | None = None

    def set_schedule(self, steps_per_epoch: int, total_steps: int) -> None:
        """The loop tells the run's length before the first step (hook e): warm-ups in epochs and
        schedules over the run read it."""
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps

    def run_epochs(self) -> float | None:
        """The run's length in epochs, or None before :meth:`set_schedule`."""
        if self.total_steps is None or not self.steps_per_epoch:
            return None
        return self.total_steps / self.steps_per_epoch

    def progress(self, step: int) -> float:
        """Steps done / total steps at ``step`` (the ``progress`` of :meth:`regularize`); 1 before
        :meth:`set_schedule`, i.e. past any warm-up."""
        return step / self.total_steps if self.total_steps else 1.0

    def regular_due(self, step: int) -> bool:
        """Whether ``step`` takes a regular step (hook f; a schedule that alternates epochs of
        regular and meta steps skips some)."""
        return True

    def meta_due(self, step: int) -> bool:
        """Whether ``step`` ends with a meta step (hook f): every ``meta_every``-th by default."""
        return bool(self.meta_every) and (step + 1) % self.meta_every == 0

    def regular_optimizer(self) -> tuple[str, float, float, float] | None:
        """(optimizer, peak learning rate, weight decay, momentum) the regular step trains with
        instead of the base method's (hook g); None: the method's."""
        return None

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The loop's optimizer, given once it is built and before a resumed state loads
        (hook g): a meta optimizer that follows its rule is built here."""

    def backbone_metadata(self) -> dict[str, Any]:
        """Entries saved in the backbone checkpoint's metadata (hook h), e.g. MetaMask's mask,
        which its paper's kNN applies to the features."""
        return {}

    def joint_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the main optimizer together with the method (hook c)."""
        return []

    def regularize(self, base_loss: torch.Tensor, method: Method, batch: dict[str, torch.Tensor],
                   out: Outputs, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, named terms to log) from the method's loss and the step's tensors
        (hook a)."""
        return base_loss, {}

    def meta_step(self, method: Method, batch: dict[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer, lr: float, step: int) -> dict[str, float]:
        """Update the meta parameters (hook d); returns scalars to log."""
        return {}
