"""The MPII run's checks on what mmengine loaded and trained, and its record of the validations.

mmpose only warns when its ``Pretrained`` init loads nothing (a mis-prefixed file) and mmengine
loads a Runner checkpoint with ``strict=False``, logging the rest; :class:`BackboneGuard` makes
each an error: after the Runner's weight init every backbone tensor is compared with the opened
backbone, and after a Runner checkpoint is loaded (``--resume``, ``--eval-only``) every tensor of
it must be in the model as written. With the ``fixed`` protocol every backbone tensor, BN buffers
included, must be unchanged after training.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from mmengine.hooks import Hook

from pretrain.open_backbone import Backbone
from transfer.mpii_checkpoint import checkpoint_path, load_from_suite_resume
from transfer.mpii_config import MpiiPoseError

BEST_KEY = "PCK"  # mmpose's save_best='PCK' (PCKh@0.5), rule 'greater'


def _backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _differences(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in expected.items()
            if k not in actual or actual[k].shape != v.shape
            or not torch.equal(actual[k].to(v.dtype), v)]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a (distributed) data-parallel wrapper."""
    return getattr(model, "module", model)


class BackboneGuard(Hook):
    """Fails the run when the backbone did not load (a fresh run: the converted file; after
    ``--resume`` or for ``--eval-only``: every tensor of the Runner checkpoint read), or
    (``fixed``) when training changed it; records the last and the best validation metrics (by
    mmpose's ``save_best`` key, PCKh@0.5) and the wall time of all validation passes."""

    priority = "VERY_HIGH"

    def __init__(self, backbone: Backbone | None, checkpoint: Path, frozen: bool,
                 runner_checkpoint: str | None = None) -> None:
        self.expected = {} if backbone is None else {
            k: v for k, v in backbone.model.state_dict().items()
            if not k.endswith("num_batches_tracked")}
        self.checkpoint, self.frozen = checkpoint, frozen
        self.runner_checkpoint = runner_checkpoint  # what --resume / --eval-only loads
        self.start: dict[str, torch.Tensor] = {}
        self.metrics: dict[str, float] = {}
        self.best: dict[str, Any] = {}
        self.val_seconds = self.val_start = 0.0

    def _check_runner_checkpoint(self, runner: Any) -> None:
        """Every tensor of the Runner checkpoint is in the model as written (mmengine loads it
        with ``strict=False`` and only logs the rest)."""
        written = load_from_suite_resume(self.runner_checkpoint)["state_dict"]
        state = unwrap(runner.model).state_dict()
        wrong = [k for k, v in written.items() if k not in state or state[k].shape != v.shape
                 or not torch.equal(state[k].detach().cpu(), v.to(state[k].dtype))]
        if wrong:
            raise MpiiPoseError(
                f"{checkpoint_path(self.runner_checkpoint)}: after mmengine loaded it, "
                f"{len(wrong)} of its {len(written)} tensors are not in the model as written "
                f"(e.g. {wrong[:3]}); mmengine only warns about this")

    def before_val(self, runner: Any) -> None:
        if self.runner_checkpoint and not self.start:  # --eval-only: nothing trained here
            self._check_runner_checkpoint(runner)

    def before_train(self, runner: Any) -> None:
        backbone = unwrap(runner.model).backbone
        self.start = _backbone_state(backbone)
        if self.runner_checkpoint:  # resumed: it holds the run's weights, not the file's
            self._check_runner_checkpoint(runner)
            return
        wrong = _differences(self.start, self.expected)
        missing = [k for k in self.start if k not in self.expected
                   and not k.endswith("num_batches_tracked")]
        if wrong or missing:
            raise MpiiPoseError(
                f"the backbone was not loaded from {self.checkpoint}: {len(wrong)} tensors differ "
                f"(e.g. {wrong[:3]}), {len(missing)} absent from the file (e.g. {missing[:3]}); "
                "mmpose only warns about this. Check --prefix and the checkpoint's keys")

    def after_train(self, runner: Any) -> None:
        if not self.frozen:
            return
        changed = _differences(_backbone_state(unwrap(runner.model).backbone), self.start)
        if changed:
            raise MpiiPoseError(f"protocol 'fixed' but training changed {len(changed)} backbone "
                                f"tensors (e.g. {changed[:3]}): the backbone was not frozen")

    def before_val_epoch(self, runner: Any) -> None:
        self.val_start = time.perf_counter()

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        self.metrics = dict(metrics or {})
        self.val_seconds += time.perf_counter() - self.val_start
        score = {k.split("/")[-1]: v for k, v in self.metrics.items()}.get(BEST_KEY)
        if score is not None and (not self.best or score > self.best["score"]):
            self.best = {"score": float(score), "iteration": runner.iter,
                         "metrics": dict(self.metrics)}
