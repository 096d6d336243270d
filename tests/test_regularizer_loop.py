"""The training loop's contract with the regularizers: the meta step sees the optimizer's state
and parameters after ``optimizer.step()``, the warm-ups reach the losses (step 0 against after the
warm-up), the meta steps come on their schedule (every ``meta_every``-th step; ICL-MSR's epoch
alternation), and MetaMask's mask travels with the backbone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_regularizers import tiny_batch, tiny_pair

from pretrain.checkpoint import CheckpointError, feature_mask, load_backbone, save_backbone
from pretrain.regularizers.mcr import mec_lambda
from pretrain.train import training_step


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _step(model, reg, optimizer, step: int, total: int = 100, size: int = 8  # noqa: ANN001
          ) -> tuple[float, dict]:
    return training_step(model, model, reg, optimizer, tiny_batch(size=size), step, step / total,
                         0.1, amp=False)


@pytest.mark.parametrize("method,regularizer", [("simclr", "msr"), ("barlow_twins", "mcr"),
                                                ("simclr", "metamask")])
def test_the_meta_step_sees_the_state_after_the_optimizer_step(method: str,
                                                               regularizer: str) -> None:
    """The virtual step is the optimizer's next step only if the real one has been taken."""
    model, reg = tiny_pair(method, regularizer)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen = []
    meta_step = reg.meta_step

    def spy(method, batch, optimizer, lr, step):  # noqa: ANN001, ANN202
        seen.append({"params": _snapshot(model), "momentum": [
            optimizer.state[p].get("momentum_buffer") for p in model.parameters()
            if p.requires_grad]})
        return meta_step(method, batch, optimizer, lr, step)

    reg.meta_step = spy
    before = _snapshot(model)
    _step(model, reg, optimizer, 0)
    after = _snapshot(model)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert len(seen) == 1
    assert all(torch.equal(s, a) for s, a in zip(seen[0]["params"], after))
    assert all(m is not None for m in seen[0]["momentum"])  # the first step's buffers exist


def test_the_warm_ups_reach_the_losses() -> None:
    """RCL: L_r alone at step 0, L_c + 10 L_r after its 15%; MCR: lambda_MEC / 8 at step 0,
    lambda_MEC after MEC's 10%."""
    model, rcl = tiny_pair("simclr", "rcl")
    rcl.double()
    rcl.set_schedule(steps_per_epoch=10, total_steps=100)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step, warm in ((0, True), (50, False)):
        loss, logs = _step(model, rcl, optimizer, step, size=16)
        expected = logs["recon"] if warm else logs["contrast"] + 10 * logs["recon"]
        assert loss == pytest.approx(expected, rel=1e-6), (step, loss, logs)  # float32 log
    model, mcr = tiny_pair("simclr", "mcr")
    mcr.set_schedule(steps_per_epoch=10, total_steps=100)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    lam = mec_lambda(6, 5)                                    # the tiny batch: m = 6, d = 5
    for step, expected in ((0, lam / 8), (5, lam / 4.5), (50, lam)):
        _, logs = _step(model, mcr, optimizer, step)
        assert logs["mcr_lambda"] == pytest.approx(expected), step


def test_meta_steps_come_on_their_schedule() -> None:
    model, reg = tiny_pair("simclr", "metamask", meta_every=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    due = [("meta_outer" in _step(model, reg, optimizer, step)[1]) for step in range(4)]
    assert due == [False, True, False, True]
    # ICL-MSR's Algorithm 1: an epoch of regular steps, then an epoch of meta steps
    model, msr = tiny_pair("simclr", "msr", schedule="alternate")
    msr.set_schedule(steps_per_epoch=2, total_steps=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step, meta in ((0, False), (1, False), (2, True), (3, True), (4, False)):
        before, meta_before = _snapshot(model), _snapshot(msr)
        loss, logs = _step(model, msr, optimizer, step, total=8)
        model_moved = any(not torch.equal(a, b) for a, b in zip(_snapshot(model), before))
        meta_moved = any(not torch.equal(a, b) for a, b in zip(_snapshot(msr), meta_before))
        assert (model_moved, meta_moved, "meta_outer" in logs) == (not meta, meta, meta), step
        if meta:  # a meta-only step logs its inner loss, the regular objective L_to
            assert loss == pytest.approx(logs["meta_inner"])


def test_metamasks_mask_travels_with_the_backbone(tmp_path: Path) -> None:
    _, reg = tiny_pair("simclr", "metamask")
    with torch.no_grad():
        reg.feature_mask.weight.copy_(torch.linspace(-2, 2, 6))
    path = save_backbone(tmp_path / "b.safetensors", {"w": torch.zeros(1)},
                         {"method": "simclr", **reg.backbone_metadata()})
    _, meta = load_backbone(path)
    torch.testing.assert_close(feature_mask(meta, 6, str(path)),
                               torch.sigmoid(torch.linspace(-2, 2, 6)).float())
    assert feature_mask({"method": "simclr"}, 6, "x") is None
    for bad in ([0.5] * 5, ["a"] * 6, [True] * 6, "0.5", [float("nan")] * 6):
        with pytest.raises(CheckpointError, match="feature_mask"):
            feature_mask({"feature_mask": bad}, 6, "b.safetensors")
