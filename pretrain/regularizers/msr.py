"""ICL-MSR: Interventional Contrastive Learning with Meta Semantic Regularizer.

Qiang et al., ICML 2022.

A meta semantic regularizer f_msr (a small CNN on the un-augmented image X) outputs n weight
vectors A_s = [a_1..a_n] over the backbone's c channels, shared by both views of X. The
backdoor-adjusted probability of the positive (eq. 4) is

    P(Y | do(X)) = sum_t 1/n * e(s_t) / (e(s_t) + sum_neg e(sim(z_i^j, z_k^l)/tau)),
    e(s_t) = exp(sim(z_i^j, a_t * z_i^{3-j}) / tau),

and L_msr = -log P over every anchor (eq. 6). Regular step: f and the projector minimise
L_ct + lambda L_msr. Meta step (Algorithm 1): a virtual step
f1 = f - alpha grad(L_ct + lambda L_msr) with the graph kept, then f_msr minimises
L_ct(f1) + gamma L_uni, L_uni = log sum_{i,j} exp(2t a_i.a_j - 2t) (eq. 9).
Defaults (section 6.1): t = 2, n = 6; lambda / gamma = 1 / 1 with SimCLR and 0.1 / 1 with BYOL.

Schedule (``schedule``): Algorithm 1 alternates epochs, an epoch of regular steps (f and f_ph, f_msr
fixed) then an epoch of meta steps (f_msr only, each on a fresh minibatch); ``schedule=alternate``
does that (even epochs regular, odd epochs meta; counted in the run's epochs, so half of a run's
steps train the backbone). The default, ``interleaved``, takes one meta step after each regular
step on the same minibatch: the same two updates in the same 1:1 ratio, but at the suite's budgets
(the CPU budget is 0.27 epochs, the full one 1-2 epochs of COCO) epoch alternation would give no
meta step at all, or spend half the backbone's steps on f_msr; ``meta_every`` thins the meta steps.

Choices where the paper is ambiguous:
- z is the globally pooled backbone feature (the paper's Z_i^j is the w x h x c feature map and a_t
  weights its channels; pooling commutes with the channel weighting, and the pooled vector is what
  the projector sees).
- Negatives are the 2(N-1) other samples of both views, as in NT-Xent (eq. 3 writes l != j, which
  read literally would drop the same-view negatives that L_ct uses); under DDP N is the global
  batch: every rank's features are gathered with gradients, as the base loss gathers its
  embeddings (``pretrain.methods.simclr.nt_xent``), so W ranks compute what one process computes
  on the combined batch.
- L_msr is averaged over the 2N anchors (not summed) so lambda does not scale with the batch.
- a_t = sigmoid(.) in (0, 1) ("large weights for the related subset of channels, small outside");
  L_uni uses the L2-normalised a_t, since the Gaussian potential is defined on the sphere
  (Wang & Isola 2020), and is averaged over the batch's weight matrices.
- Works with any base method that has a backbone feature h; for methods without negatives (BYOL)
  the batch still supplies them to this term, as the paper's BYOL+MSR must.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.config import ConfigError
from pretrain.distributed import gather_with_grad, rank
from pretrain.methods.base import Method, Outputs, full_precision
from pretrain.regularizers.common import options, require_method
from pretrain.regularizers.virtual_step import BilevelRegularizer, Objective


def backdoor_nll(h1: torch.Tensor, h2: torch.Tensor, weights: torch.Tensor,
                 temperature: float = 0.5) -> torch.Tensor:
    """L_msr (eq. 4, 6), mean over this rank's 2n anchors; the negatives are both views of every
    rank's batch (gathered with gradients, as SimCLR's NT-Xent does).

    h1, h2: (n, c) pooled backbone features of the two views; weights: (n, n_vectors, c) = A_s.
    """
    n = h1.shape[0]
    h1, h2 = full_precision(h1), full_precision(h2)
    z1, z2 = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
    z = torch.cat([z1, z2])                                           # (2n, c) anchors
    positives = torch.cat([h2, h1])                                   # z_i^{3-j} per anchor
    a = torch.cat([weights, weights]).to(z.dtype)                     # (2n, n_vectors, c)
    weighted = F.normalize(a * positives.unsqueeze(1), dim=2)         # a_t * z_i^{3-j}
    s_pos = torch.einsum("bc,btc->bt", z, weighted) / temperature     # (2n, n_vectors)

    all1, all2 = gather_with_grad(z1), gather_with_grad(z2)
    total = all1.shape[0]
    sim = z @ torch.cat([all1, all2]).t() / temperature               # (2n, 2N)
    own = torch.arange(n, device=z.device) + rank() * n
    anchors = torch.arange(2 * n, device=z.device)
    not_negative = torch.zeros_like(sim, dtype=torch.bool)
    not_negative[anchors, torch.cat([own, own + total])] = True      # the anchor itself
    not_negative[anchors, torch.cat([own + total, own])] = True      # its other view
    neg_lse = torch.logsumexp(sim.masked_fill(not_negative, float("-inf")), dim=1, keepdim=True)
    log_terms = s_pos - torch.logaddexp(s_pos, neg_lse)               # log of each fraction
    log_p = torch.logsumexp(log_terms, dim=1) - math.log(weights.shape[1])
    return -log_p.mean()


def uniformity(weights: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """L_uni (eq. 9) of (N, n, c) weights: log sum_{i,j} exp(2t a_i.a_j - 2t), batch mean."""
    a = F.normalize(weights, dim=-1)
    gram = a @ a.transpose(1, 2)                                      # (N, n, n)
    return torch.logsumexp((2 * t * gram - 2 * t).flatten(1), dim=1).mean()


class SemanticWeightNet(nn.Module):
    """f_msr: a small CNN on the un-augmented image -> n channel-weight vectors in (0, 1)."""

    def __init__(self, channels: int, n_vectors: int = 6, width: int = 32) -> None:
        super().__init__()
        self.channels, self.n_vectors = channels, n_vectors
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, n_vectors * channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.features(image))
        return torch.sigmoid(logits).view(-1, self.n_vectors, self.channels)


class MSR(BilevelRegularizer):
    """ICL-MSR on SimCLR or BYOL: L_ct + lambda L_msr, and a meta step for f_msr every step."""

    needs_plain = True
    DEFAULTS = {"n_vectors": 6, "t": 2.0, "lam": None, "gamma": 1.0, "temperature": None,
                "meta_lr": 1e-3, "meta_every": 1, "width": 32, "schedule": "interleaved"}

    def __init__(self, method: Method, cfg: Any = None) -> None:
        super().__init__(method, cfg)
        name = require_method("msr", method, ("simclr", "byol"))
        opts = options("msr", cfg, self.DEFAULTS)
        self.lam = opts["lam"] if opts["lam"] is not None else {"simclr": 1.0, "byol": 0.1}[name]
        self.gamma, self.t, self.meta_every = opts["gamma"], opts["t"], int(opts["meta_every"])
        if opts["schedule"] not in ("interleaved", "alternate"):
            raise ConfigError(f"--regularizer-arg schedule={opts['schedule']}: choose interleaved "
                              "or alternate")
        self.alternate = opts["schedule"] == "alternate"
        self.temperature = opts["temperature"] or getattr(method, "temperature", 0.5)
        self.weight_net = SemanticWeightNet(method.feature_dim, opts["n_vectors"], opts["width"])
        # Adam, as the paper trains every module with Adam (section 6.1).
        self.meta_optimizer = torch.optim.Adam(self.weight_net.parameters(), lr=opts["meta_lr"])

    def _meta_epoch(self, step: int) -> bool:
        return (step // (self.steps_per_epoch or 1)) % 2 == 1

    def regular_due(self, step: int) -> bool:
        return not (self.alternate and self._meta_epoch(step))

    def meta_due(self, step: int) -> bool:
        return self._meta_epoch(step) if self.alternate else super().meta_due(step)

    def regularize(self, base_loss: torch.Tensor, method: Method, batch: dict[str, torch.Tensor],
                   out: Outputs, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():  # f_msr is fixed in the regular step
            weights = self.weight_net(batch["plain"])
        msr = backdoor_nll(out["h1"], out["h2"], weights, self.temperature)
        return base_loss + self.lam * msr, {"ssl": base_loss.detach(), "msr": msr.detach()}

    def meta_objectives(self, batch: dict[str, torch.Tensor], step: int
                        ) -> tuple[Objective, Objective]:
        """Algorithm 1: inner L_ct + lambda L_msr(A_s), outer L_ct(f1) + gamma L_uni(A_s)."""
        weights = self.weight_net(batch["plain"])
        return (lambda out: out["loss"] + self.lam * backdoor_nll(
                    out["h1"], out["h2"], weights, self.temperature),
                lambda out: out["loss"] + self.gamma * uniformity(weights, self.t))
