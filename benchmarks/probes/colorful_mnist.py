"""Colorful-MNIST (RCL's shortcut benchmark): digit and background top-1 of one backbone.

    ssl-colorful-mnist --weights CKPT|random [--data ROOT]
        [--protocol fixed|finetune] [--supervised-on digit[,background]|all]
        [--trials N] [--seed S] [--out RUN_FOLDER]

fixed: frozen features, linear probe and weighted kNN (k=5, 200) on both labels; finetune: the
whole backbone with a digit head and a background head. A backbone that learned only the
background scores high on background_top1 and near chance (10%) on digit_top1. With no --data it
runs on the embedded synthetic default; see benchmarks/probes/protocols.py for the recipes.
"""
from __future__ import annotations

import sys

from benchmarks.probes.probe import Task, main, run_task
from pretrain.data import ColorfulMNIST
from pretrain.synthetic import default_root

TASK = Task(
    name="colorful_mnist",
    classes={"digit": 10, "background": 10},
    load=lambda root, split, transform: ColorfulMNIST(root, split, transform),
    default_data=default_root,
    description=__doc__,
    hflip=False,  # a mirrored digit is not the digit (2, 3, 7 ...): no flip when fine-tuning
)

def cli() -> int:
    """The console script ``ssl-colorful-mnist``: ``python -m benchmarks.probes.colorful_mnist``."""
    return main(lambda argv: run_task(TASK, argv))


if __name__ == "__main__":
    sys.exit(cli())
