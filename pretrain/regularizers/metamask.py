"""MetaMask: meta-learned dimensional mask against dimensional confounders (NeurIPS 2022).

A learnable mask M (one weight per backbone feature dimension) multiplies the pooled feature h.
Two heads read the masked feature: g_drr with the Barlow Twins redundancy-reduction loss and g_cl,
the base method's own projector, with the contrastive loss.
Regular step (eq. 5): encoder and both heads minimise L_drr + alpha L_contrast with M fixed.
Meta step (eqs. 6-7, Algorithm 1): trial weights theta' = the optimizer's step on L_contrast for
the encoder and g_cl (graph kept; the official code steps with its SGD's momentum and weight
decay, as the shared virtual step does with whatever the run trains with), then M minimises
L_contrast(g_cl'(f'(x) * M)), a second-order gradient (exact here; the official code takes the
Hessian-vector product by finite differences).

Defaults are the official code's (github jiangmengli/MetaMask, meta-mask.py and
models/mask_generator.py), each paper alternative a ``--regularizer-arg``:

- ``mask=sigmoid``: M = sigmoid(m), m initialised to 0 (FeatureMask with enable_sigmoid, the
  default). ``mask=linear``: M = m initialised to 1, unbounded (its --disable-sigmoid).
- ``temperature=0.07``: the script's contrastive temperature (``self.temperature = 0.07``).
  ``temperature=null``: the base method's own loss unchanged (the paper: "tau valued by following
  [1]", i.e. SimCLR's).
- ``alpha=10``: the script's --weight-cl. ``alpha=100``: the paper's best value (appendix A.4.1,
  Figure 6).
- The mask's optimizer: SGD with ``meta_lr=1e-3``, momentum 0.9, weight decay 5e-4 and a cosine
  schedule over the run (configure_optimizers: CosineAnnealingLR over the epochs; here per step,
  as the loop's own schedule). ``mask_schedule=constant``: the fixed learning rate of the paper's
  MetaMask* (section 6.2, Figure 4).
- The regular step's optimizer (``regular_optimizer=official``): the official code's, SGD at
  1e-3 (whatever the batch), momentum 0.9, weight decay 5e-4, cosine over the run (the loop's
  schedule, after its warm-up); the mask's learning rate is tuned against it. Given
  ``--optimizer``, ``--lr`` or ``--weight-decay``, the run trains the base method's recipe with
  those changes instead.
  ``regular_optimizer=base``: the base method's (e.g. LARS at 0.3 x B / 256 for SimCLR).
- The mask is saved in the backbone checkpoint's metadata (``feature_mask``, M's values): the
  official code scores its kNN (the metric of the paper's Table 2) on h * M, and the probes apply
  it to MetaMask backbones (``pretrain.checkpoint.feature_mask``).
- L_contrast is NT-Xent at that temperature on the base projector's outputs for SimCLR (the
  script's contrastive_loss is NT-Xent); the paper's Table 1 also pairs MetaMask with Barlow Twins,
  whose own loss then plays that role (no temperature).
- g_drr is a 3-layer MLP like Barlow Twins' projector, d -> 2048 -> 2048 -> 2048 (the script's
  --projection-out-dim 2048), off-diagonal weight 5e-3 (Barlow Twins'); ``drr_dim`` changes it.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pretrain.config import ConfigError
from pretrain.methods.barlow_twins import barlow_loss
from pretrain.methods.base import Method, Outputs, mlp
from pretrain.methods.simclr import nt_xent
from pretrain.regularizers.common import options, require_method
from pretrain.regularizers.virtual_step import BilevelRegularizer, Objective


class DimensionalMask(nn.Module):
    """h -> h * M, one weight per feature dimension: M = sigmoid(m) from m = 0, or M = m from 1."""

    def __init__(self, dim: int, sigmoid: bool = True) -> None:
        super().__init__()
        self.sigmoid = sigmoid
        self.weight = nn.Parameter(torch.zeros(dim) if sigmoid else torch.ones(dim))

    def mask(self) -> torch.Tensor:
        return torch.sigmoid(self.weight) if self.sigmoid else self.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.mask()


class MetaMask(BilevelRegularizer):
    DEFAULTS = {"alpha": 10.0, "temperature": 0.07, "mask": "sigmoid", "drr_dim": 2048,
                "off_diagonal_weight": 5e-3, "meta_lr": 1e-3, "mask_schedule": "cosine",
                "meta_every": 1, "regular_optimizer": "official"}
    #: The official code's optimizer of encoder and heads: (name, lr, weight decay, momentum).
    OFFICIAL_OPTIMIZER = ("sgd", 1e-3, 5e-4, 0.9)

    def __init__(self, method: Method, cfg: Any = None) -> None:
        super().__init__(method, cfg)
        self.method_name = require_method("metamask", method, ("simclr", "barlow_twins"))
        opts = options("metamask", cfg, self.DEFAULTS)
        for key, choices in (("mask", ("sigmoid", "linear")),
                             ("mask_schedule", ("cosine", "constant")),
                             ("regular_optimizer", ("official", "base"))):
            if opts[key] not in choices:
                raise ConfigError(f"--regularizer-arg {key}={opts[key]}: choose "
                                  f"{' or '.join(choices)}")
        self.alpha, self.off_diagonal_weight = opts["alpha"], opts["off_diagonal_weight"]
        self.temperature, self.meta_every = opts["temperature"], int(opts["meta_every"])
        self.meta_lr, self.cosine = opts["meta_lr"], opts["mask_schedule"] == "cosine"
        self.official_optimizer = opts["regular_optimizer"] == "official"
        self.feature_mask = DimensionalMask(method.feature_dim, opts["mask"] == "sigmoid")
        self.drr_head = mlp(method.feature_dim, opts["drr_dim"], opts["drr_dim"], layers=3)
        self.meta_optimizer = torch.optim.SGD(self.feature_mask.parameters(), lr=self.meta_lr,
                                              momentum=0.9, weight_decay=5e-4)

    def joint_parameters(self) -> list[nn.Parameter]:
        return list(self.drr_head.parameters())

    def regular_optimizer(self) -> tuple[str, float, float, float] | None:
        return self.OFFICIAL_OPTIMIZER if self.official_optimizer else None

    def backbone_metadata(self) -> dict[str, Any]:
        return {"feature_mask": [float(v) for v in self.feature_mask.mask().detach().cpu()]}

    def contrast(self, out: Outputs) -> torch.Tensor:
        """L_contrast: NT-Xent at MetaMask's temperature (SimCLR), else the base method's loss."""
        if self.method_name == "simclr" and self.temperature is not None:
            return nt_xent(out["z1"], out["z2"], self.temperature)
        return out["loss"]

    def regularize(self, base_loss: torch.Tensor, method: Method, batch: dict[str, torch.Tensor],
                   out: Outputs, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask = self.feature_mask.mask().detach()  # M is fixed in the regular step
        drr = barlow_loss(self.drr_head(out["h1"] * mask), self.drr_head(out["h2"] * mask),
                          self.off_diagonal_weight)
        contrast = self.contrast(out)
        return drr + self.alpha * contrast, {"contrast": contrast.detach(), "drr": drr.detach()}

    def meta_objectives(self, batch: dict[str, torch.Tensor], step: int
                        ) -> tuple[Objective, Objective]:
        return self.contrast, self.contrast

    def meta_step(self, method: Method, batch: dict[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer, lr: float, step: int) -> dict[str, float]:
        progress = self.progress(step) if self.cosine and self.total_steps else 0.0
        mask_lr = self.meta_lr * 0.5 * (1 + math.cos(math.pi * progress))
        for group in self.meta_optimizer.param_groups:
            group["lr"] = mask_lr
        return {**super().meta_step(method, batch, optimizer, lr, step), "mask_lr": mask_lr}
