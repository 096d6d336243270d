"""The seed regularizers' losses against hand-computed values on tiny inputs."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pretrain.regularizers.mcr import comp_loss, mcr_loss, mec_trace
from pretrain.regularizers.msr import SemanticWeightNet, backdoor_nll, uniformity
from pretrain.regularizers.rcl import Decoder, apply_masks, square_masks


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
    assert torch.isclose(mec_trace(z, z, mu=1.0, lam=lam, order=12), exact, rtol=1e-9)
    # N > d takes the d x d path: the same trace.
    tall = F.normalize(torch.randn(9, 3, dtype=torch.float64), dim=1)
    exact = torch.logdet(torch.eye(9, dtype=torch.float64) + lam * tall @ tall.t())
    assert torch.isclose(mec_trace(tall, tall, 1.0, lam, 12), exact, rtol=1e-9)


def test_mcr_is_lowest_when_views_match_the_comprehensive_embedding() -> None:
    torch.manual_seed(0)
    z_hat = torch.randn(16, 8)
    far = torch.randn(16, 8)
    assert mcr_loss(z_hat, z_hat, z_hat) < mcr_loss(z_hat, far, far)
    spread = torch.eye(8).repeat(2, 1)
    collapsed = torch.ones(16, 8)
    assert comp_loss(spread) < comp_loss(collapsed)  # more entropy, lower L_comp


def test_rcl_masks_follow_the_spec() -> None:
    size = 64
    masks = square_masks(200, size, torch.Generator().manual_seed(0))
    fraction = masks.float().mean(dim=(1, 2, 3))
    low, high = round(0.15 * size), round(0.25 * size)
    assert (fraction >= low * low / size**2).all()              # at least one full square
    assert (fraction <= 5 * high * high / size**2).all()        # at most five of the largest
    assert torch.equal(masks, square_masks(200, size, torch.Generator().manual_seed(0)))
    one = square_masks(50, size, torch.Generator().manual_seed(1), count=(1, 1))
    sides = one.any(dim=2).sum(dim=-1).flatten()                # width of the single square
    assert sides.min() >= low and sides.max() <= high
    images = torch.rand(2, 3, size, size)
    fill = torch.tensor([0.1, 0.2, 0.3])
    masked = apply_masks(images, masks[:2], fill)
    assert torch.equal(masked[0, :, masks[0, 0]], fill[:, None].expand(3, int(masks[0].sum())))
    assert torch.equal(masked[:, :, ~masks[:2, 0].any(0)], images[:, :, ~masks[:2, 0].any(0)])


def test_decoder_restores_the_input_size() -> None:
    out = Decoder(in_channels=512, feature_size=8, image_size=64)(torch.rand(2, 512, 8, 8))
    assert out.shape == (2, 3, 64, 64)
