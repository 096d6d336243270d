"""Each regularizer's objectives against reference implementations written from its paper's
equations (plain float64 loops in this file, each line citing its equation), in value and in
gradient, on fixed inputs, for every (base, regularizer) pair the papers define; and the defaults
pinned to the papers' tables (MetaMask: its official code), each with its source.

The references read only the method's outputs (h, z, the base loss) and the regularizer's
networks as functions; every loss, fusion, mask, target, sign and weight is rebuilt here.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from test_regularizers import TinyBackbone, _cfg, tiny_batch, tiny_pair
from torch import nn

from pretrain.methods import METHODS, build_method
from pretrain.regularizers import REGULARIZERS
from pretrain.regularizers.rcl import square_masks

Tensor = torch.Tensor


# ---- shared pieces -----------------------------------------------------------------------------

def cos(a: Tensor, b: Tensor) -> Tensor:
    return a @ b / (a.norm() * b.norm())


def ref_nt_xent(z1: Tensor, z2: Tensor, tau: float) -> Tensor:
    """SimCLR's NT-Xent (its eq. 1): l(i, j) = -log exp(sim(z_i, z_j) / tau) /
    sum_{k != i} exp(sim(z_i, z_k) / tau), averaged over the 2N anchors."""
    z, n = torch.cat([z1, z2]), z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(torch.exp(cos(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        total = total - torch.log(torch.exp(cos(z[i], z[positive]) / tau) / denominator)
    return total / (2 * n)


def batch_norm(z: Tensor, eps: float = 1e-5) -> Tensor:
    """BatchNorm1d(affine=False) in training mode: biased batch variance, eps = 1e-5."""
    return (z - z.mean(0)) / torch.sqrt(((z - z.mean(0)) ** 2).mean(0) + eps)


def ref_barlow(z1: Tensor, z2: Tensor, off_diagonal: float) -> Tensor:
    """Barlow Twins (its eq. 1-2, official code's BN): C = BN(z1)^T BN(z2) / N,
    L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2."""
    c = batch_norm(z1).t() @ batch_norm(z2) / z1.shape[0]
    d = c.shape[0]
    return sum((1 - c[i, i]) ** 2 for i in range(d)) + off_diagonal * sum(
        c[i, j] ** 2 for i in range(d) for j in range(d) if j != i)


def assert_same(production: Tensor, reference: Tensor, wrt: list[Tensor], what: str) -> None:
    """Equal values and equal gradients with respect to ``wrt``."""
    torch.testing.assert_close(production, reference, rtol=1e-10, atol=1e-12,
                               msg=lambda m: f"{what}, value: {m}")
    got = torch.autograd.grad(production, wrt, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(reference, wrt, retain_graph=True, allow_unused=True)
    for g, w in zip(got, want):
        g = torch.zeros_like(w) if g is None and w is not None else g
        w = torch.zeros_like(g) if w is None and g is not None else w
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-11,
                                       msg=lambda m: f"{what}, gradient: {m}")


def setup(method: str, regularizer: str, **args) -> tuple[nn.Module, nn.Module, dict, dict]:
    model, reg = tiny_pair(method, regularizer, **args)
    batch = tiny_batch()
    out = model(batch["x1"], batch["x2"], feature_mask=reg.feature_mask)
    return model, reg, batch, out


def trainable(*modules: nn.Module) -> list[Tensor]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]


# ---- ICL-MSR (Qiang et al. 2022) ---------------------------------------------------------------

def ref_msr(h1: Tensor, h2: Tensor, a: Tensor, tau: float) -> Tensor:
    """L_msr = sum_i sum_j -log P(Y(X_i^{3-j}) | do(X_i^{3-j})) (eq. 6), averaged over the 2N
    anchors; P from eq. 4; the negatives of eq. 3 are every other sample k != i in both views."""
    views, (n_samples, n_vectors) = (h1, h2), a.shape[:2]
    total = 0.0
    for i in range(n_samples):
        for j in (0, 1):
            anchor, positive = views[j][i], views[1 - j][i]           # Z_i^j, Z_i^{3-j}
            negatives = sum(torch.exp(cos(anchor, views[view][k]) / tau)  # eq. 3: k, l sums
                            for k in range(n_samples) if k != i for view in (0, 1))
            p = 0.0
            for t in range(n_vectors):                                 # eq. 4: sum over t
                e = torch.exp(cos(anchor, a[i, t] * positive) / tau)  # a_t (.) Z_i^{3-j}
                p = p + e / (e + negatives) / n_vectors                # x 1/n
            total = total - torch.log(p)
    return total / (2 * n_samples)


def ref_uniformity(a: Tensor, t: float) -> Tensor:
    """L_uni = log sum_{a_i, a_j in A_s} exp(2t a_i^T a_j - 2t) (eq. 9), a on the unit sphere,
    averaged over the batch's A_s."""
    total = 0.0
    for weights in a:
        unit = weights / weights.norm(dim=1, keepdim=True)
        total = total + torch.log(sum(torch.exp(2 * t * unit[i] @ unit[j] - 2 * t)
                                      for i in range(len(unit)) for j in range(len(unit))))
    return total / a.shape[0]


@pytest.mark.parametrize("method,lam", [("simclr", 1.0), ("byol", 0.1)])
def test_msr_objectives_are_eqs_3_to_9(method: str, lam: float) -> None:
    model, reg, batch, out = setup(method, "msr")
    tau, gamma, t = reg.temperature, 1.0, 2.0
    a = reg.weight_net(batch["plain"])
    wrt = trainable(model, reg)
    total, _ = reg.regularize(out["loss"], model, batch, out, 0.5)
    # eq. 5: L_to = L_ct + lambda L_msr, f_msr fixed in the regular step
    assert_same(total, out["loss"] + lam * ref_msr(out["h1"], out["h2"], a.detach(), tau),
                trainable(model), "MSR regular step (eq. 5)")
    inner, outer = reg.meta_objectives(batch, 2)
    # eq. 7's inner loss L_to, with A_s a function of f_msr
    assert_same(inner(out), out["loss"] + lam * ref_msr(out["h1"], out["h2"], a, tau), wrt,
                "MSR inner (eqs. 5, 7)")
    # eq. 8: L_ct(f^1, f_ph^1) + gamma L_uni
    assert_same(outer(out), out["loss"] + gamma * ref_uniformity(a, t), wrt,
                "MSR outer (eqs. 8, 9)")


# ---- MCR (AAAI 2024) with MEC's constants --------------------------------------------------------

def ref_series(a: Tensor, b: Tensor, lam: float, order: int) -> Tensor:
    """Tr(sum_{k=1..m} (-1)^{k+1} / k (lambda A B^T)^k) (eqs. 6-7), as m x m matrix powers."""
    c = lam * a @ b.t()
    return sum((-1) ** (k + 1) / k * torch.trace(torch.linalg.matrix_power(c, k))
               for k in range(1, order + 1))


def unit_rows(z: Tensor) -> Tensor:
    return z / z.norm(dim=1, keepdim=True)


def ref_lambda(embeddings: list[Tensor], lam_mec: float) -> float:
    """MEC's lambda where lambda x the largest eigenvalue of every e e^T is below 1 (the series
    converges), else MEC's guarantee, min(lambda_MEC, 1 / m) (MEC section 3.2)."""
    largest = max(float(torch.linalg.eigvalsh(e.detach() @ e.detach().t()).max())
                  for e in embeddings)
    return lam_mec if lam_mec * largest < 1 else min(lam_mec, 1 / embeddings[0].shape[0])


def ref_mcr_terms(reg: nn.Module, out: dict, eps: float = 64.0, order: int = 4
                  ) -> tuple[Tensor, Tensor, float]:
    """(L_comp, L_mcr, L_mcr's lambda) of eqs. 6-7 with MEC's mu = (m + d) / 2 and
    lambda_MEC = d / (m eps) (mu scaled by lambda_MEC / lambda where the guarantee's lambda is
    used): Z_hat from the concatenation [h^1, h^2] (eq. 5) through g_xi, standardised as MEC's
    teacher (BatchNorm1d(affine=False)) and L2-normalised; Z_1, Z_2 L2-normalised."""
    z_hat = reg.compmod.net(torch.cat([out["h1"], out["h2"]], dim=1))   # eq. 5, then g_xi
    e_hat, views = unit_rows(batch_norm(z_hat)), [unit_rows(out[z]) for z in ("z1", "z2")]
    m, d = e_hat.shape
    mu, lam_mec = (m + d) / 2, d / (m * eps)
    lam = ref_lambda([e_hat], lam_mec)
    comp = -mu * lam_mec / lam * ref_series(e_hat, e_hat, lam, order)               # eq. 6
    lam = ref_lambda([e_hat, *views], lam_mec)
    mcr = -sum(mu * lam_mec / lam * ref_series(e_hat, e, lam, order) for e in views)  # eq. 7
    return comp, mcr, lam


@pytest.mark.parametrize("method,eps", [("simclr", 64.0), ("byol", 64.0),
                                        ("barlow_twins", 64.0), ("simclr", 4.0),
                                        ("simclr", 0.5)])
def test_mcr_objectives_are_eqs_5_to_9(method: str, eps: float) -> None:
    """eps = 64 (MEC's) and 4: MEC's lambda (5 / (6 eps) > 1 / m at eps = 4, radius 0.74);
    eps = 0.5: past the radius, the guarantee's 1 / m."""
    model, reg, batch, out = setup(method, "mcr", eps=eps)
    lambda1, lambda2 = 0.01, 0.1
    comp, mcr, lam = ref_mcr_terms(reg, out, eps)
    assert lam == (1 / 6 if eps < 1 else 5 / (6 * eps))
    total, terms = reg.regularize(out["loss"], model, batch, out, 0.5)
    assert float(terms["mcr_lambda"]) == pytest.approx(lam)
    assert_same(total, out["loss"] + lambda1 * mcr, trainable(model), "MCR regular step (eq. 8)")
    inner, outer = reg.meta_objectives(batch, 2)
    wrt = trainable(model, reg)
    assert_same(inner(out), out["loss"] + lambda1 * mcr, wrt, "MCR inner (eq. 9's constraint)")
    assert_same(outer(out), out["loss"] + lambda2 * comp, wrt, "MCR outer (eq. 9)")


def test_mcr_steps_xi_with_the_loops_optimizer() -> None:
    """Algorithm 1, line 12: xi descends with the rate r of theta and phi."""
    model, reg = tiny_pair("simclr", "mcr")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    reg.bind_optimizer(optimizer)
    assert type(reg.meta_optimizer) is torch.optim.SGD
    optimizer.param_groups[0]["lr"] = 0.02  # the loop's schedule moved
    reg.meta_step(model, tiny_batch(), optimizer, 0.02, 0)
    assert reg.meta_optimizer.param_groups[0]["lr"] == 0.02
    assert reg.meta_optimizer.param_groups[0]["momentum"] == 0.9


# ---- MetaMask (NeurIPS 2022) ---------------------------------------------------------------------

def ref_metamask(model: nn.Module, reg: nn.Module, out: dict, contrast: Callable
                 ) -> tuple[Tensor, Tensor]:
    """(L_drr, L_contrast) of eq. 5 on the masked representation f(x) (x) M, M = sigmoid(m)
    (the official FeatureMask with sigmoid): L_drr is Barlow Twins' loss through g_drr,
    L_contrast the contrastive loss through g_cl (the base projector)."""
    mask = torch.sigmoid(reg.feature_mask.weight)
    masked = [out["h1"] * mask, out["h2"] * mask]
    drr = ref_barlow(reg.drr_head(masked[0]), reg.drr_head(masked[1]), 5e-3)
    return drr, contrast(model.projector(masked[0]), model.projector(masked[1]))


@pytest.mark.parametrize("method", ["simclr", "barlow_twins"])
def test_metamask_objectives_are_eqs_5_to_7(method: str) -> None:
    model, reg, batch, out = setup(method, "metamask")
    alpha = 10.0  # the official --weight-cl
    contrast = (lambda z1, z2: ref_nt_xent(z1, z2, 0.07)) if method == "simclr" else \
        (lambda z1, z2: ref_barlow(z1, z2, 5e-3))     # Table 1's Barlow Twins + MetaMask
    drr, cl = ref_metamask(model, reg, out, contrast)
    total, _ = reg.regularize(out["loss"], model, batch, out, 0.5)
    # eq. 5: encoder and both heads descend it (M is not in their optimizer, so it stays fixed)
    mask = reg.feature_mask.weight
    assert_same(total, drr + alpha * cl, trainable(model) + reg.joint_parameters(),
                "MetaMask regular step (eq. 5)")
    inner, outer = reg.meta_objectives(batch, 2)
    # eq. 6's trial step and eq. 7's meta objective: L_contrast on the masked representation
    assert_same(inner(out), cl, trainable(model) + [mask], "MetaMask inner (eq. 6)")
    assert_same(outer(out), cl, trainable(model) + [mask], "MetaMask outer (eq. 7)")


# ---- RCL (Li et al.) ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["mocov2", "simclr", "byol"])
def test_rcl_reconstructs_the_masked_squares_of_the_unmasked_view(method: str) -> None:
    """L = L_c + lambda L_r, L_r = ||D(E(M(x))) - x||^2 (mean over pixels): M(x) fills 3-5
    squares with the data set's mean, the target is x itself; the warm-up trains L_r alone."""
    torch.manual_seed(0)
    model = build_method(method, TinyBackbone(), 6, **METHODS[method].SMALL_ARGS).double()
    reg = REGULARIZERS["rcl"](model, _cfg(method, "rcl", decoder_width=4)).double()
    batch = tiny_batch(size=16)
    out = model(batch["x1"], batch["x2"])
    x = batch["x1"]
    reg.set_schedule(steps_per_epoch=10, total_steps=100)            # warm-up: 15% of the run
    wrt = trainable(model, reg)
    for progress, warm in ((0.1, True), (0.5, False)):
        torch.manual_seed(7)
        total, _ = reg.regularize(out["loss"], model, batch, out, progress)
        torch.manual_seed(7)
        squares = square_masks(x.shape[0], x.shape[-1], count=(3, 5), side=(10 / 64, 16 / 64))
        masked = x.clone()
        for i in range(x.shape[0]):
            masked[i][:, squares[i, 0]] = reg.fill.view(3, 1).to(x)   # M(x): the mean pixel
        reconstruction = reg.decoder(model.encode(masked)[0])
        recon = ((reconstruction - x) ** 2).mean()                     # against x, unmasked
        reference = recon if warm else out["loss"] + 10.0 * recon
        assert_same(total, reference, wrt, f"RCL at progress {progress}")


# ---- defaults, each with its source ------------------------------------------------------------

def test_defaults_are_the_papers() -> None:
    msr = REGULARIZERS["msr"].DEFAULTS
    assert (msr["n_vectors"], msr["t"]) == (6, 2.0)      # ICL-MSR 6.2: "We set t = 2 and n = 6"
    assert msr["gamma"] == 1.0                            # ICL-MSR 6.4: gamma = 1
    assert tiny_pair("simclr", "msr")[1].lam == 1.0       # ICL-MSR 6.4: lambda = 1 (SimCLR)
    assert tiny_pair("byol", "msr")[1].lam == 0.1         # BYOL + MSR: lambda = 0.1
    assert tiny_pair("simclr", "msr")[1].temperature == 0.5   # ICL-MSR 6.2: tau = 0.5 (SimCLR)
    mcr = REGULARIZERS["mcr"].DEFAULTS
    assert (mcr["lambda1"], mcr["lambda2"]) == (0.01, 0.1)    # MCR Table 6, best cell
    assert (mcr["order"], mcr["eps"]) == (4, 64.0)            # MEC main_pretrain.py
    assert mcr["xi_step"] == "backbone"                       # MCR Algorithm 1, line 12
    mm = REGULARIZERS["metamask"].DEFAULTS                    # official meta-mask.py
    assert (mm["alpha"], mm["temperature"], mm["mask"]) == (10.0, 0.07, "sigmoid")
    assert (mm["drr_dim"], mm["off_diagonal_weight"], mm["meta_lr"]) == (2048, 5e-3, 1e-3)
    assert mm["regular_optimizer"] == "official"
    assert REGULARIZERS["metamask"].OFFICIAL_OPTIMIZER == ("sgd", 1e-3, 5e-4, 0.9)
    assert tiny_pair("simclr", "metamask")[1].regular_optimizer() == ("sgd", 1e-3, 5e-4, 0.9)
    assert tiny_pair("simclr", "metamask", regular_optimizer="base")[1] \
        .regular_optimizer() is None
    rcl = REGULARIZERS["rcl"].DEFAULTS                        # RCL Appendix C
    assert (rcl["lam"], rcl["min_squares"], rcl["max_squares"]) == (10.0, 3, 5)
    assert math.isclose(tiny_pair("simclr", "rcl")[1].warmup_fraction(), 30 / 200)
