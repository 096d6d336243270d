"""The one place that opens a backbone: a checkpoint file of any supported format, or the
random-init control.

    backbone = open_backbone(weights or RANDOM, arch, stem, seed, prefix)

A file is read once (:func:`pretrain.foreign.read_source`: the suite's checkpoint or a ResNet
trained elsewhere, never executing code from it), rebuilt with its own arch, stem geometry (a 3x3
conv1 padded as its library pads it) and stride convention (a network trained with its stride in
the 1x1 conv, detectron2's default and mmcv's ``style='caffe'``, is built so:
:func:`move_stride_to_1x1`) and loaded strictly; ``arch`` and ``stem``, when given, must agree
with it (``stem`` says the padding of a 3x3 conv1 whose file does not). ``RANDOM`` is the
random-init control, the same everywhere: torchvision's init with ``zero_init_residual=True``,
seeded by ``seed``, named ``random-init-<arch>-<stem>-seed<seed>``. Zero-initialised residual
branches (Goyal et al. 2017, torchvision's ``zero_init_residual``) are what the control needs in
detection: from a plain random init with frozen BN, detectron2's Mask R-CNN diverges within about
nine iterations ("Predicted boxes or scores contain Inf/NaN").

Every probe, both engine drivers, the converter and the suite runner open backbones here.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from pretrain.backbones import ARCHS, READ_STEMS, build_resnet
from pretrain.checkpoint import CheckpointError
from pretrain.files import file_sha256
from pretrain.foreign import ForeignBackbone, parse_bool, read_source, resnet_skeleton

RANDOM = "random"
RANDOM_METHOD = "random-init"
DEFAULT_ARCH, DEFAULT_STEM = "resnet18", "imagenet"


@dataclass(frozen=True)
class Backbone:
    model: nn.Module
    meta: dict[str, Any]   # arch, stem, and the checkpoint's own metadata when it has some
    weights: Path | None   # the file read; None for the random-init control
    key: str               # identity: the file's sha256 (+ the copy and convention read from
                           # it, when not the defaults), or the random-init recipe
    source: ForeignBackbone | None = None  # the file's own tensors, for verifying conversions

    @property
    def origin(self) -> str:
        """The file it came from, or the random-init control's name (for records and errors)."""
        return str(self.weights) if self.weights is not None else self.meta["backbone_id"]


def is_random(weights: str | os.PathLike | None) -> bool:
    """Whether ``weights`` asks for the random-init control (``random``, any case)."""
    return str(weights).lower() == RANDOM


def random_init_id(arch: str, stem: str, seed: int) -> str:
    """The random-init control's one name, its backbone id on the leaderboard."""
    return f"{RANDOM_METHOD}-{arch}-{stem}-seed{seed}"


def open_backbone(weights: str | os.PathLike = RANDOM, arch: str | None = None,
                  stem: str | None = None, seed: int = 0, prefix: str | None = None,
                  stride_in_1x1: bool | None = None) -> Backbone:
    """``weights``: a checkpoint file (the suite's format or any :mod:`pretrain.foreign` reads)
    or ``random``. ``arch``/``stem`` choose the random-init control (default resnet18, imagenet
    stem) and ``seed`` seeds it; for a file they are read from it (``stem`` gives the padding of
    a 3x3 conv1 whose file does not say it). ``prefix`` selects the backbone inside a file that
    holds several; ``stride_in_1x1`` gives the stride convention of a bottleneck ResNet whose file
    does not say it."""
    if is_random(weights):
        if stride_in_1x1 is not None:
            raise CheckpointError("--stride-in-1x1: the random-init control has torchvision's "
                                  "convention; the flag describes a checkpoint file")
        arch, stem = arch or DEFAULT_ARCH, stem or DEFAULT_STEM
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_resnet(arch, stem, zero_init_residual=True)
        name = random_init_id(arch, stem, seed)
        meta = {"method": RANDOM_METHOD, "regularizer": "none", "arch": arch, "stem": stem,
                "data": "", "epochs": 0, "steps": 0, "seed": seed, "backbone_id": name,
                "stride_in_1x1": False}
        return Backbone(model, meta, None,
                        f"{name}-zero_init_residual-torch{torch.__version__}")
    path = Path(weights)
    source = read_source(path, prefix, stride_in_1x1, stem)
    meta = source.meta
    for name, wanted in (("arch", arch), ("stem", stem)):
        if wanted and wanted != meta[name]:
            raise CheckpointError(f"--{name} {wanted}: {path} holds a {meta['arch']} with the "
                                  f"{meta['stem']} stem; --arch and --stem choose the "
                                  "random-init control (--stem also a 3x3 conv1's padding)")
    model = resnet_skeleton(meta["arch"], meta["stem"]).to_empty(device="cpu")
    model.load_state_dict(source.state, strict=True)  # every tensor, so no init is needed
    key = file_sha256(path)
    if meta["stride_in_1x1"]:
        move_stride_to_1x1(model)
        key += "+stride_in_1x1"
    if meta["source_prefix"]:  # one file may hold several backbones (student/teacher, EMA)
        key += f"+{meta['source_prefix']}"
    return Backbone(model, meta, path, key, source)


def move_stride_to_1x1(model: nn.Module) -> nn.Module:
    """Give a torchvision ResNet's bottlenecks the stride-in-1x1 convention of detectron2's
    ``STRIDE_IN_1X1=True`` and mmcv's ``style='caffe'``: conv1 (1x1) takes the block's stride,
    conv2 (3x3) keeps stride 1. The output sizes are those of torchvision's convention
    (ceil(H/2) both ways), so the same weights load and only the features change."""
    for module in model.modules():
        if isinstance(module, Bottleneck) and module.conv2.stride != (1, 1):
            module.conv1.stride, module.conv2.stride = module.conv2.stride, (1, 1)
    return model


def backbone_name(value: str) -> str:
    """An argparse type for ``--backbone-name``: a non-empty name."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty; give the backbone's name or leave the flag out")
    return value


def add_backbone_arguments(parser: argparse.ArgumentParser, *, random_arch: str = DEFAULT_ARCH,
                           random_stem: str = DEFAULT_STEM, weights_help: str = "") -> None:
    """The flags that choose a backbone, the same in every stage that opens one. ``random_arch``
    and ``random_stem`` name the stage's defaults for the random-init control (for the help)."""
    parser.add_argument("--weights", help="backbone checkpoint (the suite's format or any "
                        "format pretrain/foreign/ reads: torchvision, timm, MoCo, solo-learn, "
                        "mmselfsup, VISSL, lightly, detectron2), or 'random' for the random-init "
                        "control" + weights_help)
    parser.add_argument("--prefix", help="key prefix of the backbone inside a checkpoint that "
                        "holds several (e.g. 'module.encoder_q.'); found automatically otherwise")
    parser.add_argument("--stride-in-1x1", type=parse_bool, metavar="true|false",
                        help="the stride convention of a ResNet-50 whose file does not say it: "
                        "true if trained with detectron2's default (stride in the first 1x1 "
                        "conv of a bottleneck), false for torchvision's (stride in the 3x3)")
    parser.add_argument("--arch", choices=ARCHS, help="the random-init control's arch (default "
                        f"{random_arch}; a checkpoint's own is read from it)")
    parser.add_argument("--backbone-name", type=backbone_name, metavar="NAME",
                        help="the backbone's name in the leaderboard's backbone_name column, "
                        "shown in tables in place of its method (the suite passes NAME of "
                        "--checkpoint NAME=PATH)")
    parser.add_argument("--stem", choices=READ_STEMS, help="the random-init control's stem "
                        f"(default {random_stem}; a checkpoint's own is read from it, and this "
                        "flag only says the padding of a 3x3 conv1 whose file does not: small "
                        "pads 1, small-pad2 pads 2 as solo-learn does)")

