"""Why ICL-MSR is inert at the suite's CPU budget (figures, not a test).

    python tools/msr_scale.py                    # at initialisation, BYOL+MSR and SimCLR+MSR
    python tools/msr_scale.py --run RUN_DIR      # a trained byol/simclr+msr run folder

On one batch of the embedded Colorful-MNIST (the CPU budget's 32 images, 64 px, ResNet-18 with the
ImageNet stem) it prints what decides whether MSR can change the backbone:
- lambda L_msr against L_ssl, and the norm of lambda L_msr's gradient on the backbone over L_ssl's,
  with the cosine between the two gradients (the regular step's share of MSR);
- how far f_msr's weights are from uniform: the channel-wise coefficient of variation of each a_t,
  and L_msr with the weights of f_msr minus L_msr with every a_t = 1. With uniform weights,
  a_t * z is z after normalisation, so L_msr is plain InfoNCE between the views and the meta step,
  which only moves f_msr, has nothing to act through.
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
from pretrain.regularizers.msr import MSR, backdoor_nll
from pretrain.run_state import trained_modules


def batch_of(size: int) -> dict[str, torch.Tensor]:
    views = TwoViews(AugmentSpec.for_data("colorful_mnist", 64), with_plain=True)
    data = SeededViews(build_unlabelled("colorful_mnist", None, views), 0)
    step = len(data) // size
    x1, x2, plain = zip(*(data[i * step][:3] for i in range(size)))
    return {"x1": torch.stack(x1), "x2": torch.stack(x2), "plain": torch.stack(plain)}


def norm(grads: tuple[torch.Tensor, ...]) -> float:
    return float(torch.sqrt(sum(g.pow(2).sum() for g in grads)))


def cosine(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    dot = sum((x * y).sum() for x, y in zip(a, b))
    return float(dot) / (norm(a) * norm(b))


def measure(method: torch.nn.Module, reg: MSR, batch: dict[str, torch.Tensor]) -> str:
    method.train(), reg.train()  # batch statistics, as in training
    out = method(batch["x1"], batch["x2"])
    with torch.no_grad():
        weights = reg.weight_net(batch["plain"])
    msr = reg.lam * backdoor_nll(out["h1"], out["h2"], weights, reg.temperature)
    backbone = list(method.backbone.parameters())
    g_msr = torch.autograd.grad(msr, backbone, retain_graph=True)
    g_ssl = torch.autograd.grad(out["loss"], backbone, retain_graph=True)
    with torch.no_grad():
        uniform = reg.lam * backdoor_nll(out["h1"], out["h2"], torch.ones_like(weights),
                                         reg.temperature)
        spread = float((weights.std(dim=2) / weights.mean(dim=2)).mean())
    ssl, msr_v, uni = float(out["loss"].detach()), float(msr.detach()), float(uniform)
    return (f"L_ssl {ssl:.4f}  lambda L_msr {msr_v:.4f} ({msr_v / ssl:.3f} L_ssl)  gradient "
            f"{norm(g_msr) / norm(g_ssl):.3f}x L_ssl's, cosine {cosine(g_msr, g_ssl):+.3f}  "
            f"a_t spread (CV over channels) {spread:.4f}  lambda (L_msr - L_msr[a=1]) "
            f"{msr_v - uni:+.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a pretraining run folder with --regularizer msr")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    batch = batch_of(args.batch_size)
    if args.run is None:
        print(f"at initialisation (seed 0), batch {args.batch_size}")
        for name in ("byol", "simclr"):
            torch.manual_seed(0)
            method = build_method(name, build_resnet("resnet18", "imagenet"), 512)
            print(f"{name:<7}", measure(method, MSR(method), batch), flush=True)
        return 0
    cfg, step, method, reg = trained_modules(args.run, MSR)
    print(f"{args.run} after {step} steps, batch {args.batch_size}")
    print(f"{cfg.method:<7}", measure(method, reg, batch), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
