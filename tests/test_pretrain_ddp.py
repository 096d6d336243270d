"""DDP on the CPU (gloo): two processes compute exactly the gradients of one process on the
combined batch (SimCLR's and Barlow Twins' cross-rank terms via gathers with gradients), MoCo's
queue receives every rank's keys, and the bi-level regularizers, with every module the production
code builds and the BatchNorm conversion the loop applies under DDP (``global_batch_norm``, with
--sync-bn), give one process's regular-step gradients and meta-gradients (ICL-MSR's negatives,
MCR's global batch, MetaMask's redundancy head, the all-reduced inner gradients of the virtual
step). The methods-only test strips BatchNorm (without --sync-bn its per-rank statistics differ by
design)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_methods import small_method
from test_regularizers import meta_gradient, strip_batch_norm, tiny_batch, tiny_pair
from torch import nn

from pretrain.global_norm import global_batch_norm
from pretrain.methods import METHODS
from pretrain.optim import LARS

REPO = Path(__file__).resolve().parent.parent
WORLD, PER_RANK = 2, 4


META_PAIRS = [("simclr", "msr"), ("barlow_twins", "mcr"), ("simclr", "metamask")]


def _toy_method(name: str) -> nn.Module:
    return strip_batch_norm(small_method(name))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = (WORLD * PER_RANK, 3, 8, 8)
    return (torch.randn(shape, generator=g),
            torch.randn(shape, generator=g))


def _step(model: nn.Module, method: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> dict:
    out = model(x1, x2)
    out["loss"].backward()
    method.after_step(out, 0.0)
    return {"grads": {n: p.grad.clone() for n, p in method.named_parameters()
                      if p.grad is not None},
            "buffers": {n: b.clone() for n, b in method.named_buffers()}}


def _regularizer_gradients(rows: slice) -> dict[str, dict[str, torch.Tensor]]:
    """Each bi-level regularizer's regular-step gradient (this rank's, of the method's and the
    joint parameters) and meta-gradient (float64, every module kept) on ``rows`` of the batch."""
    grads = {}
    for method, regularizer in META_PAIRS:
        model, reg = global_batch_norm(*tiny_pair(method, regularizer), cuda=False, sync_bn=True)
        batch = {k: v[rows] for k, v in tiny_batch(WORLD * PER_RANK).items()}
        out = model(batch["x1"], batch["x2"], feature_mask=reg.feature_mask)
        loss, _ = reg.regularize(out["loss"], model, batch, out, 0.5)
        params = [p for p in model.parameters() if p.requires_grad] + reg.joint_parameters()
        regular = torch.autograd.grad(loss, params, allow_unused=True)
        optimizer = LARS(model.parameters(), lr=2.0, weight_decay=1e-2, momentum=0.9, eta=0.05)
        grads[regularizer] = {
            "regular": torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten()
                                  for p, g in zip(params, regular)]),
            "meta": torch.cat([g.flatten() for g in meta_gradient(reg, model, batch, optimizer)])}
    return grads


def _worker(rank: int, rendezvous: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=WORLD)
    torch.set_num_threads(1)
    x1, x2 = _batch()
    mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    results = {}
    for name in METHODS:
        method = _toy_method(name)
        model = nn.parallel.DistributedDataParallel(method)
        results[name] = _step(model, method, x1[mine], x2[mine])
    results["regularizers"] = _regularizer_gradients(mine)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """What each of two gloo ranks computed on its half of the batch."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out / "rendezvous"), str(out)), nprocs=WORLD)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.mark.slow
def test_two_ranks_match_one_process_on_the_combined_batch(two_ranks: list[dict]) -> None:
    x1, x2 = _batch()
    for name in METHODS:
        method = _toy_method(name)
        reference = _step(method, method, x1, x2)
        assert reference["grads"]
        # float32 sums in another order: tolerance relative to the largest gradient (some are
        # zero analytically, e.g. the bias before Barlow Twins' standardisation)
        scale = max(float(g.abs().max()) for g in reference["grads"].values())
        for rank in range(WORLD):
            got = two_ranks[rank][name]
            assert got["grads"].keys() == reference["grads"].keys()
            for key, grad in reference["grads"].items():
                torch.testing.assert_close(got["grads"][key], grad, rtol=1e-4, atol=1e-5 * scale,
                                           msg=lambda m, where=f"{name} rank {rank}, {key}":
                                           f"{where}: {m}")
            if name == "mocov2":  # the queue holds all 8 keys, in rank order, on every rank
                torch.testing.assert_close(got["buffers"]["queue"], reference["buffers"]["queue"])
                assert int(got["buffers"]["queue_ptr"]) == WORLD * PER_RANK


@pytest.mark.slow
@pytest.mark.parametrize("regularizer", [pair[1] for pair in META_PAIRS])
def test_two_ranks_regularizers_as_shipped_match_one_process(two_ranks: list[dict],
                                                             regularizer: str) -> None:
    """The regular step's gradient (DDP's average of the ranks') and the meta-gradient (averaged
    by the meta step itself) of two ranks against one process on the combined batch."""
    reference = _regularizer_gradients(slice(None))[regularizer]
    assert reference["regular"].norm() > 0 and reference["meta"].norm() > 0
    regular = sum(ranks["regularizers"][regularizer]["regular"] for ranks in two_ranks) / WORLD
    error = (regular - reference["regular"]).norm() / reference["regular"].norm()
    assert error < 1e-9, (regularizer, float(error))
    for rank in range(WORLD):
        got = two_ranks[rank]["regularizers"][regularizer]["meta"]
        error = (got - reference["meta"]).norm() / reference["meta"].norm()
        assert error < 1e-9, (regularizer, rank, float(error))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
