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

Choices where the paper is ambiguous:
- z is the globally pooled backbone feature (the paper's Z_i^j is the w x h x c feature map and a_t
  weights its channels; pooling commutes with the channel weighting, and the pooled vector is what
  the projector sees).
- Negatives are the 2(N-1) other samples of both views, as in NT-Xent (eq. 3 writes l != j, which
  read literally would drop the same-view negatives that L_ct uses).
- L_msr is averaged over the 2N anchors (not summed) so lambda does not scale with the batch.
- a_t = sigmoid(.) in (0, 1) ("large weights for the related subset of channels, small outside");
  L_uni uses the L2-normalised a_t, since the Gaussian potential is defined on the sphere
  (Wang & Isola 2020), and is averaged over the batch's weight matrices.
- Works with any base method that has a backbone feature h; for methods without negatives (BYOL)
  the batch still supplies them to this term, as the paper's BYOL+MSR must.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def backdoor_nll(h1: torch.Tensor, h2: torch.Tensor, weights: torch.Tensor,
                 temperature: float = 0.5) -> torch.Tensor:
    """L_msr (eq. 4, 6), mean over the 2N anchors.

    h1, h2: (N, c) pooled backbone features of the two views; weights: (N, n, c) = A_s per sample.
    """
    n_samples = h1.shape[0]
    z = F.normalize(torch.cat([h1, h2]), dim=1)                       # (2N, c) anchors
    positives = torch.cat([h2, h1])                                   # z_i^{3-j} per anchor
    a = torch.cat([weights, weights])                                 # (2N, n, c)
    weighted = F.normalize(a * positives.unsqueeze(1), dim=2)         # a_t * z_i^{3-j}
    s_pos = torch.einsum("bc,btc->bt", z, weighted) / temperature     # (2N, n)

    sim = z @ z.t() / temperature                                     # (2N, 2N)
    index = torch.arange(2 * n_samples, device=z.device)
    not_negative = (index[:, None] == index[None, :]) \
        | (index[:, None] == (index[None, :] + n_samples) % (2 * n_samples))
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
