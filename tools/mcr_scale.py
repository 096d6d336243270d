"""MCR's terms against the base loss at the suite's batch sizes (the figures in
pretrain/regularizers/mcr.py's docstring; figures, not a test).

    .venv/bin/python tools/mcr_scale.py                    # CPU and full budget sizes, at init
    .venv/bin/python tools/mcr_scale.py --run RUN_DIR      # a trained simclr/byol/barlow_twins+mcr

For each (method, batch m, projector width d): m images of the embedded Colorful-MNIST (two
augmented views, 64 px, seeded), a ResNet-18 with the ImageNet stem (the CPU budget's), and with
lambda past its warm-up: L_ssl, lambda1 L_mcr / L_ssl, the norm of lambda1 L_mcr's gradient on the
backbone over L_ssl's, lambda2 L_comp / L_ssl and the series' radius (converges below 1).
``--run`` loads a pretraining run's method and regularizer (its config.yaml and last_state.pt) and
measures at the run's batch size and at 256.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pretrain.augment import AugmentSpec, SeededViews, TwoViews
from pretrain.backbones import build_resnet
from pretrain.data import build_unlabelled
from pretrain.methods import build_method
from pretrain.regularizers.mcr import MCR, comp_loss, mcr_terms
from pretrain.run_state import trained_modules

#: (method, batch, method args): the CPU budget's (32; SimCLR's 128-d, its 2048-d Barlow Twins
#: projector) and the full budget's (256; 128-d, Barlow Twins' 8192-d); BYOL's 256-d for both.
SIZES = [("simclr", 32, {}), ("barlow_twins", 32, {"proj_hidden_dim": 2048, "proj_dim": 2048}),
         ("byol", 32, {}), ("simclr", 256, {}), ("barlow_twins", 256, {}), ("byol", 256, {})]


def views(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = SeededViews(build_unlabelled("colorful_mnist", None,
                                        TwoViews(AugmentSpec.for_data("colorful_mnist", 64))), 0)
    step = len(data) // batch
    x1, x2 = zip(*(data[i * step][:2] for i in range(batch)))
    return torch.stack(x1), torch.stack(x2)


def measure(method: torch.nn.Module, reg: MCR, batch: int) -> str:
    method.train(), reg.train()  # batch statistics, as in training
    out = method(*views(batch))
    z_hat = reg.compmod(out["h1"], out["h2"])
    mcr, lam, radius = mcr_terms(z_hat, out["z1"], out["z2"], reg.order, reg.eps)
    ssl, mcr = out["loss"], reg.lambda1 * mcr
    backbone = list(method.backbone.parameters())
    grad_ratio = (norm(torch.autograd.grad(mcr, backbone, retain_graph=True))
                  / norm(torch.autograd.grad(ssl, backbone)))
    with torch.no_grad():
        comp = float(reg.lambda2 * comp_loss(z_hat, reg.order, reg.eps))
    ssl, mcr = float(ssl.detach()), float(mcr.detach())
    return (f"m={batch:<4d} d={z_hat.shape[1]:<5d} L_ssl {ssl:9.4g}  lambda1 L_mcr "
            f"{mcr:10.4g} ({mcr / ssl:+.2g} L_ssl; backbone gradient {grad_ratio:.2g}x L_ssl's)"
            f"  lambda2 L_comp {comp:10.4g} ({comp / ssl:+.3g} L_ssl)  radius {radius:.3f}  "
            f"lambda {lam:.3g}")


def norm(grads: tuple[torch.Tensor, ...]) -> float:
    return float(torch.sqrt(sum(g.pow(2).sum() for g in grads)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a pretraining run folder with --regularizer mcr")
    args = parser.parse_args(argv)
    if args.run is None:
        print("at initialisation (seed 0), lambda past its warm-up")
        for name, batch, method_args in SIZES:
            torch.manual_seed(0)
            method = build_method(name, build_resnet("resnet18", "imagenet"), 512, **method_args)
            print(f"{name:<13}", measure(method, MCR(method), batch), flush=True)
        return 0
    cfg, step, method, reg = trained_modules(args.run, MCR)
    print(f"{args.run} after {step} steps, lambda past its warm-up")
    for batch in (cfg.batch_size, 256):
        print(f"{cfg.method:<13}", measure(method, reg, batch), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
