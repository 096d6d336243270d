"""The seed regularizers' losses against hand-computed values on tiny inputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pretrain.regularizers.common import warmup_fraction
from pretrain.regularizers.mcr import (
    SeriesDivergenceError,
    coding_series,
    comp_loss,
    mcr_loss,
    mec_embedding,
    mec_lambda,
    mec_scale,
    series_lambda,
    series_radius,
)
from pretrain.regularizers.msr import SemanticWeightNet, backdoor_nll, uniformity
from pretrain.regularizers.rcl import IMAGENET_SIDES, Decoder, apply_masks, square_masks


def test_uniformity_of_orthogonal_and_equal_vectors() -> None:
    n, t = 4, 2.0
    orthogonal = torch.eye(n).unsqueeze(0)                    # a_i . a_j = 0 for i != j
    equal = torch.ones(1, n, n)                               # every a_i identical
    assert math.isclose(uniformity(equal, t).item(), math.log(n * n), rel_tol=1e-6)
    expected = math.log(n + n * (n - 1) * math.exp(-2 * t))
    assert math.isclose(uniformity(orthogonal, t).item(), expected, rel_tol=1e-6)
    assert uniformity(orthogonal, t) < uniformity(equal, t)


def test_backdoor_nll_by_hand() -> None:
    torch.manual_seed(0)
    h1, h2 = torch.rand(3, 5), torch.rand(3, 5)
    weights = torch.rand(3, 2, 5)
    tau = 0.5
    z = F.normalize(torch.cat([h1, h2]), dim=1)
    total = 0.0
    for i in range(6):
        pair = (i + 3) % 6
        other = torch.cat([h1, h2])[pair]
        negatives = sum(math.exp((z[i] @ z[k]).item() / tau) for k in range(6)
                        if k not in (i, pair))
        p = 0.0
        for t in range(2):
            positive = F.normalize(weights[i % 3, t] * other, dim=0)
            e = math.exp((z[i] @ positive).item() / tau)
            p += e / (e + negatives) / 2
        total += -math.log(p)
    assert math.isclose(backdoor_nll(h1, h2, weights, tau).item(), total / 6, rel_tol=1e-5)


def test_semantic_weight_net_shapes() -> None:
    weights = SemanticWeightNet(channels=16, n_vectors=6)(torch.rand(2, 3, 32, 32))
    assert weights.shape == (2, 6, 16) and (weights > 0).all() and (weights < 1).all()


def test_mec_taylor_series_approaches_log_det() -> None:
    torch.manual_seed(0)
    z = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1)
    lam = 0.05
    exact = torch.logdet(torch.eye(6, dtype=torch.float64) + lam * z @ z.t())
    assert torch.isclose(coding_series(z, z, lam, order=12), exact, rtol=1e-9)
    # N > d takes the d x d path: the same trace.
    tall = F.normalize(torch.randn(9, 3, dtype=torch.float64), dim=1)
    exact = torch.logdet(torch.eye(9, dtype=torch.float64) + lam * tall @ tall.t())
    assert torch.isclose(coding_series(tall, tall, lam, 12), exact, rtol=1e-9)


def test_mcr_is_lowest_when_views_match_the_comprehensive_embedding() -> None:
    torch.manual_seed(0)
    z_hat = torch.randn(16, 8)
    far = torch.randn(16, 8)
    assert mcr_loss(z_hat, z_hat, z_hat) < mcr_loss(z_hat, far, far)
    spread = torch.eye(8).repeat(2, 1)
    collapsed = torch.randn(16, 1) * torch.randn(1, 8) + 0.01 * torch.randn(16, 8)
    assert comp_loss(spread) < comp_loss(collapsed)  # more entropy, lower L_comp


def test_mec_constants_and_warm_up() -> None:
    assert mec_lambda(64, 8192) == 8192 / (64 * 64)                # MEC's: d / (m eps)
    assert mec_lambda(32, 128, guaranteed=True) == mec_lambda(32, 2048, guaranteed=True) \
        == 1 / 32                                                  # MEC's guarantee: 1 / m
    assert mec_lambda(32, 16, guaranteed=True) == 16 / (32 * 64)
    assert mec_lambda(256, 128, warmup=0.0) == mec_lambda(256, 128) / 8
    assert mec_lambda(256, 128, warmup=0.5) == mec_lambda(256, 128) / 4.5
    assert mec_scale(32, 128) == 80 * 32 * (128 / (32 * 64))      # mu m lambda_MEC


def _power_law_embeddings(batch: int, dim: int, seed: int = 0) -> list[torch.Tensor]:
    """Z_hat, Z_1, Z_2: one embedding of shared latent factors with eigenvalue k ~ 1/k (the
    power law of learned representations), each with its own noise."""
    g = torch.Generator().manual_seed(seed)
    rank = min(batch, dim)
    latent = torch.randn(batch, rank, dtype=torch.float64, generator=g) \
        / torch.arange(1, rank + 1, dtype=torch.float64).sqrt()
    mixing = torch.linalg.qr(torch.randn(dim, rank, dtype=torch.float64, generator=g))[0].t()
    return [latent @ mixing + 0.05 * torch.randn(batch, dim, dtype=torch.float64, generator=g)
            / rank ** 0.5 for _ in range(3)]


@pytest.mark.parametrize("batch,dim", [(32, 128), (32, 2048), (256, 128), (256, 8192)])
def test_mcr_at_the_budgets_sizes_is_finite_and_converges_after_warm_up(batch: int,
                                                                       dim: int) -> None:
    """The CPU budget's sizes (32 images; SimCLR's 128-d and the CPU Barlow Twins' 2048-d
    projector) and the full budget's (256 images; 128-d, and Barlow Twins' 8192-d)."""
    z_hat, z1, z2 = _power_law_embeddings(batch, dim)
    c = mec_scale(batch, dim)
    comp, mcr = comp_loss(z_hat), mcr_loss(z_hat, z1, z2)
    assert torch.isfinite(comp) and torch.isfinite(mcr)
    # A converged series is log(1 + x) / x of the eigenvalues, in (0.58, 1], times the first-order
    # term: -c for L_comp, -c x the summed mean cosine of each view with Z_hat for L_mcr.
    assert -1 < comp / c < -0.6, float(comp / c)
    # MEC's 1/(m lambda) scaling keeps the first-order term through the lambda warm-up
    assert -1 < comp_loss(z_hat, warmup=0.0) / c < -0.6
    cosines = sum((mec_embedding(z_hat) * mec_embedding(z, False)).sum(1).mean()
                  for z in (z1, z2))
    assert 0.58 * cosines < -mcr / c < cosines, (float(mcr / c), float(cosines))
    embeddings = [mec_embedding(z_hat), mec_embedding(z1, False), mec_embedding(z2, False)]
    lam, radius = series_lambda(embeddings)
    assert 0.05 < radius < 1
    # MEC's lambda wherever its series converges; else the guarantee's edge, 1 / m
    mec_radius = series_radius(embeddings, mec_lambda(batch, dim))
    assert lam == (mec_lambda(batch, dim) if mec_radius < 1 else 1 / batch)
    assert (mec_radius < 1) == (dim == 128), mec_radius  # Barlow Twins' widths: d / eps >= 32
    assert series_radius(embeddings, mec_lambda(batch, dim, warmup=0.0)) == \
        pytest.approx(mec_radius / 8)
    collapsed = torch.randn(batch, 1, dtype=torch.float64) * torch.randn(1, dim,
                                                                         dtype=torch.float64)
    assert series_radius([mec_embedding(collapsed)], 1 / batch) == pytest.approx(1)
    with pytest.raises(SeriesDivergenceError, match="collapsed onto one direction"):
        series_lambda([mec_embedding(collapsed)], max_radius=0.99)


def test_warm_up_is_the_papers_fraction_or_its_epochs() -> None:
    assert warmup_fraction(30, 200, None) == 0.15          # no run length: the paper's fraction
    assert warmup_fraction(30, 200, 0.27) == 0.15          # shorter run: proportionate
    assert warmup_fraction(30, 200, 400) == 30 / 400       # longer run: the paper's 30 epochs
    assert warmup_fraction(10, 300, 300) == 10 / 300


@pytest.mark.parametrize("size,side,pixels", [(64, (10 / 64, 16 / 64), (10, 16)),
                                              (224, IMAGENET_SIDES, (40, 80))])
def test_rcl_masks_follow_the_spec(size: int, side: tuple[float, float],
                                   pixels: tuple[int, int]) -> None:
    """3-5 squares of 10-16 px at 64 px (Colorful-MNIST) and 40-80 px at 224 px (ImageNet)."""
    masks = square_masks(100, size, torch.Generator().manual_seed(0), side=side)
    fraction = masks.float().mean(dim=(1, 2, 3))
    low, high = pixels
    assert (fraction >= low * low / size**2).all()              # at least one full square
    assert (fraction <= 5 * high * high / size**2).all()        # at most five of the largest
    assert torch.equal(masks, square_masks(100, size, torch.Generator().manual_seed(0),
                                           side=side))
    one = square_masks(50, size, torch.Generator().manual_seed(1), count=(1, 1), side=side)
    sides = one.any(dim=2).sum(dim=-1).flatten()                # width of the single square
    assert sides.min() == low and sides.max() == high
    images = torch.rand(2, 3, size, size)
    fill = torch.tensor([0.1, 0.2, 0.3])
    masked = apply_masks(images, masks[:2], fill)
    assert torch.equal(masked[0, :, masks[0, 0]], fill[:, None].expand(3, int(masks[0].sum())))
    assert torch.equal(masked[:, :, ~masks[:2, 0].any(0)], images[:, :, ~masks[:2, 0].any(0)])


def test_decoder_restores_the_input_size() -> None:
    out = Decoder(in_channels=512, feature_size=8, image_size=64)(torch.rand(2, 512, 8, 8))
    assert out.shape == (2, 3, 64, 64)
