"""MoCo v2 (Chen et al. 2020): query vs. momentum-encoder key and a queue of past keys.

Defaults: MLP head d -> d -> 128 (no BatchNorm), temperature 0.2, queue of 65,536 keys, key
encoder momentum 0.999; SGD with lr 0.03 per 256 images, weight decay 1e-4, cosine schedule, no
warm-up. As in the paper the loss is asymmetric: view 1 is the query, view 2 the key, so ``h2`` /
``z2`` come from the key encoder (no gradient). The key encoder and the queue change only in
:meth:`after_step`; under DDP the queue receives every rank's keys. (The paper's shuffled BN is
not implemented; use ``--sync-bn`` on multi-GPU runs.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.distributed import gather_no_grad
from pretrain.methods.base import (
    FeatureMask,
    Method,
    Outputs,
    ema_update,
    frozen_copy,
    full_precision,
    mlp,
)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
             ) -> torch.Tensor:
    """Cross-entropy of the positive key against the queue's negatives (q, k, queue normalised)."""
    positive = (q * k).sum(dim=1, keepdim=True)
    negatives = q @ queue.t()
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MoCoV2(Method):
    DEFAULTS = {"optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4, "warmup_epochs": 0}
    SMALL_ARGS = {"proj_dim": 16, "queue_size": 24}

    def __init__(self, backbone: nn.Module, feature_dim: int, proj_dim: int = 128,
                 temperature: float = 0.2, queue_size: int = 65536, momentum: float = 0.999
                 ) -> None:
        super().__init__(backbone, feature_dim)
        self.projector = mlp(feature_dim, feature_dim, proj_dim, batch_norm=False)
        self.key_backbone = frozen_copy(backbone)
        self.key_projector = frozen_copy(self.projector)
        self.temperature, self.momentum = temperature, momentum
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward_views(self, x1: torch.Tensor, x2: torch.Tensor,
                      feature_mask: FeatureMask | None = None) -> Outputs:
        fmap1, h1 = self.encode(x1)
        out = {"fmap1": fmap1, "h1": h1,
               "z1": self.projector(feature_mask(h1) if feature_mask is not None else h1)}
        with torch.no_grad():
            out["fmap2"], out["h2"] = self.encode(x2, self.key_backbone)
            out["z2"] = self.key_projector(out["h2"])
        return out

    def loss(self, out: Outputs) -> torch.Tensor:
        q = F.normalize(full_precision(out["z1"]), dim=1)
        k = F.normalize(full_precision(out["z2"]), dim=1)
        return info_nce(q, k, self.queue, self.temperature)

    @torch.no_grad()
    def after_step(self, out: Outputs, progress: float) -> None:
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_projector, self.projector, self.momentum)
        keys = gather_no_grad(F.normalize(full_precision(out["z2"]), dim=1))[-len(self.queue):]
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % len(self.queue)
        self.queue[index] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % len(self.queue))
