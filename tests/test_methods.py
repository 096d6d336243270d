"""The base methods: losses against hand-computed values, one CPU step of each, the hooks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pretrain.backbones import build_resnet
from pretrain.methods import METHODS, build_method
from pretrain.methods.barlow_twins import barlow_loss
from pretrain.methods.byol import regression_loss
from pretrain.methods.mocov2 import info_nce
from pretrain.methods.simclr import nt_xent

SMALL_HEADS = {name: method.SMALL_ARGS for name, method in METHODS.items()}


def small_method(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method(name, build_resnet("resnet18", "small"), 512, **SMALL_HEADS[name])


def test_nt_xent_on_orthogonal_embeddings() -> None:
    # Both views of sample i are e_i: each anchor has its positive at cosine 1 and the 2 other
    # candidates (sample j's two views) at cosine 0: loss = log(1 + 2 exp(-1/T)).
    e = torch.eye(4)[:2]
    for t in (0.5, 1.0):
        assert nt_xent(e, e, t).item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / t)),
                                                         rel=1e-5)
    # Scaling does not matter (cosine similarity); swapped positives raise the loss.
    assert nt_xent(3 * e, e, 0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)))
    assert nt_xent(e, e.flip(0), 0.5).item() > 1.0


def test_byol_regression_loss() -> None:
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    assert regression_loss(a, 5 * a).item() == pytest.approx(0.0)
    assert regression_loss(a, b).item() == pytest.approx(2.0)
    assert regression_loss(a, -a).item() == pytest.approx(4.0)


def test_barlow_twins_loss() -> None:
    # Two uncorrelated, standardised dimensions: C = I, loss 0.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert barlow_loss(z, z, 5e-3).item() == pytest.approx(0.0, abs=1e-4)
    # Anti-correlated views: C = -I, each diagonal term (−1 − 1)^2 = 4.
    assert barlow_loss(z, -z, 5e-3).item() == pytest.approx(8.0, rel=1e-4)
    # Two identical dimensions: C is all ones; only the 2 off-diagonal terms count, times 5e-3.
    same = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [2.0, 2.0], [-2.0, -2.0]])
    assert barlow_loss(same, same, 5e-3).item() == pytest.approx(2 * 5e-3, rel=1e-3)


def test_moco_info_nce() -> None:
    q = torch.eye(4)[:1]
    queue = torch.eye(4)[1:]                      # 3 negatives orthogonal to q
    assert info_nce(q, q, queue, 0.2).item() == pytest.approx(math.log(1 + 3 * math.exp(-5)))
    # Positive opposite to the query (logit -5) against 3 orthogonal negatives (logit 0).
    assert info_nce(q, -q, queue, 0.2).item() == pytest.approx(math.log(1 + 3 * math.exp(5)))


def _step(method: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> dict:
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    out = method(x1, x2)
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    method.after_step(out, progress=0.0)
    return out


@pytest.mark.parametrize("name", list(METHODS))
def test_one_step_changes_parameters_and_loss_is_finite(name: str) -> None:
    method = small_method(name)
    before = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    out = _step(method, x1, x2)
    assert torch.isfinite(out["loss"])
    for key in ("fmap1", "fmap2", "h1", "h2", "z1", "z2"):
        assert key in out and out[key].shape[0] == 6
    assert out["h1"].shape == (6, 512) and out["fmap1"].shape == (6, 512, 2, 2)
    changed = [k for k, v in method.backbone.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert "conv1.weight" in changed and "layer4.1.conv2.weight" in changed


def test_byol_target_moves_only_by_ema() -> None:
    method = small_method("byol")
    target0 = [p.clone() for p in method.target_backbone.parameters()]
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    _step(method, x1, x2)
    m = method.momentum(0.0)
    assert m == pytest.approx(0.99)
    assert method.momentum(1.0) == pytest.approx(1.0)
    for t0, t, o in zip(target0, method.target_backbone.parameters(),
                        method.backbone.parameters()):
        assert t.grad is None and not t.requires_grad
        torch.testing.assert_close(t, m * t0 + (1 - m) * o, rtol=0, atol=1e-6)
    assert not all(torch.equal(t0, t) for t0, t in zip(target0,
                                                       method.target_backbone.parameters()))


def test_moco_queue_advances_with_the_keys() -> None:
    method = small_method("mocov2")
    queue0 = method.queue.clone()
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    out = _step(method, x1, x2)
    keys = F.normalize(out["z2"], dim=1)
    torch.testing.assert_close(method.queue[:6], keys)
    torch.testing.assert_close(method.queue[6:], queue0[6:])
    assert int(method.queue_ptr) == 6
    for _ in range(4):  # 4 more steps of 6 keys wrap around the queue of 24
        out = _step(method, x1, x2)
    assert int(method.queue_ptr) == (5 * 6) % 24
    torch.testing.assert_close(method.queue[:6], F.normalize(out["z2"], dim=1))


@pytest.mark.parametrize("name", list(METHODS))
def test_loss_recomputed_functionally(name: str) -> None:
    """``functional_call`` with substituted parameters gives the loss and its gradient (the
    bi-level regularizers' virtual step relies on it); substituting leaves the module untouched."""
    method = small_method(name)
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    params = {n: p.detach().clone().requires_grad_() for n, p in method.named_parameters()
              if p.requires_grad}
    loss = torch.func.functional_call(method, params, (x1, x2))["loss"]
    torch.testing.assert_close(loss, method(x1, x2)["loss"])
    grads = torch.autograd.grad(loss, [params["backbone.conv1.weight"]])
    assert grads[0].abs().sum() > 0 and method.backbone.conv1.weight.grad is None
    shifted = {n: p + 0.05 for n, p in params.items()}
    moved = torch.func.functional_call(method, shifted, (x1, x2))["loss"]
    assert not torch.equal(moved, loss)


def test_feature_mask_is_applied_before_the_projector() -> None:
    method = small_method("simclr")
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    out = method(x1, x2, feature_mask=lambda h: h * 0)
    # Zeroed features: every projection is the projector's response to 0 (BN makes it 0 too).
    torch.testing.assert_close(out["z1"], out["z1"][:1].expand_as(out["z1"]))
    assert out["h1"].abs().sum() > 0  # h is recorded before the mask


def test_bad_method_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        build_method("simsiam", build_resnet("resnet18"), 512)
    with pytest.raises(ValueError, match="--method-arg queue_size: not an option of simclr"):
        build_method("simclr", build_resnet("resnet18"), 512, queue_size=3)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_declares_small_test_heads(name: str) -> None:
    """A method's file gives its small heads (SMALL_ARGS); the tests build it from them."""
    assert METHODS[name].SMALL_ARGS
    method = small_method(name)
    heads = sum(p.numel() for n, p in method.named_parameters()  # trained, beside the backbone
                if p.requires_grad and not n.startswith("backbone."))
    assert 0 < heads < 300_000  # the papers' heads on 512-d features: 0.33M (SimCLR) to 138M
