"""torchvision ResNet backbones, with an optional small-image stem for 32-64 px data.

:data:`RESNETS` is the one table of the supported ResNets' depth and widths; the engines' configs
(detectron2's ``RESNETS.DEPTH`` / ``RES2_OUT_CHANNELS``, mmpose's ``depth`` and head width) and the
probes' feature size are read from it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn


@dataclass(frozen=True)
class ResNetSpec:
    """What distinguishes the supported ResNets (torchvision's definitions)."""

    depth: int
    bottleneck: bool          # Bottleneck blocks (1x1-3x3-1x1) rather than BasicBlocks
    blocks_in_layer3: int     # enough, with ``bottleneck``, to tell the three apart
    feature_dim: int          # channels of res5: the pooled feature
    res2_channels: int        # channels of res2 (detectron2's RES2_OUT_CHANNELS)


RESNETS = {
    "resnet18": ResNetSpec(depth=18, bottleneck=False, blocks_in_layer3=2, feature_dim=512,
                           res2_channels=64),
    "resnet34": ResNetSpec(depth=34, bottleneck=False, blocks_in_layer3=6, feature_dim=512,
                           res2_channels=64),
    "resnet50": ResNetSpec(depth=50, bottleneck=True, blocks_in_layer3=6, feature_dim=2048,
                           res2_channels=256),
}
ARCHS = tuple(RESNETS)
FEATURE_DIMS = {arch: spec.feature_dim for arch, spec in RESNETS.items()}


@dataclass(frozen=True)
class StemGeometry:
    """conv1 and whether a max-pool follows it."""

    kernel: int
    stride: int
    padding: int
    maxpool: bool


STEM_GEOMETRY = {
    "imagenet": StemGeometry(kernel=7, stride=2, padding=3, maxpool=True),  # torchvision's
    "small": StemGeometry(kernel=3, stride=1, padding=1, maxpool=False),    # the suite's CIFAR stem
    # solo-learn's CIFAR stem (solo/methods/base.py): read from its files, never trained here
    "small-pad2": StemGeometry(kernel=3, stride=1, padding=2, maxpool=False),
}
STEMS = ("imagenet", "small")   # what the suite trains
READ_STEMS = tuple(STEM_GEOMETRY)  # what it reads from other libraries' files
STAGES = ("res2", "res3", "res4", "res5")


def build_resnet(arch: str = "resnet18", stem: str = "imagenet",
                 zero_init_residual: bool = False) -> nn.Module:
    """A torchvision ResNet without its classifier (``fc`` is Identity, so no ``fc.*`` keys).

    ``stem="small"`` replaces the 7x7/2 conv and max-pool with a 3x3/1 conv, padding 1 (the
    CIFAR stem used by SimCLR and the seeds for small images); ``"small-pad2"`` pads it 2
    (solo-learn's). Its ``conv1.weight`` has shape (64, 3, 3, 3), which is how checkpoints record
    it too.
    """
    if arch not in RESNETS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if stem not in STEM_GEOMETRY:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(READ_STEMS)}")
    model = getattr(torchvision.models, arch)(weights=None, zero_init_residual=zero_init_residual)
    geometry = STEM_GEOMETRY[stem]
    if stem != "imagenet":
        model.conv1 = nn.Conv2d(3, 64, kernel_size=geometry.kernel, stride=geometry.stride,
                                padding=geometry.padding, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if not geometry.maxpool:
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def stem_of(state_dict: dict[str, torch.Tensor]) -> str:
    """Which stem a torchvision-keyed ResNet state_dict has, read from ``conv1.weight``'s shape
    (a 3x3 conv1 is "small"; its padding is not in the weights)."""
    return "small" if state_dict["conv1.weight"].shape[-1] == 3 else "imagenet"


def arch_of(state_dict: dict[str, torch.Tensor]) -> str:
    """Infer the arch of :data:`RESNETS` from the keys of a torchvision-keyed state_dict."""
    bottleneck = "layer1.0.conv3.weight" in state_dict
    blocks = len({k.split(".")[1] for k in state_dict if k.startswith("layer3.")})
    for arch, spec in RESNETS.items():
        if (spec.bottleneck, spec.blocks_in_layer3) == (bottleneck, blocks):
            return arch
    kind = "bottleneck" if bottleneck else "basic-block"
    known = ", ".join(f"{a} ({'bottleneck' if s.bottleneck else 'basic-block'}, "
                      f"{s.blocks_in_layer3})" for a, s in RESNETS.items())
    raise ValueError(f"{kind} ResNet with {blocks} blocks in layer3 is none of the supported "
                     f"ResNets: {known}")


def stage_outputs(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """res2..res5 feature maps of a torchvision ResNet (detectron2's names for layer1..layer4)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    outputs = {}
    for name, layer in zip(STAGES, (model.layer1, model.layer2, model.layer3, model.layer4)):
        x = layer(x)
        outputs[name] = x
    return outputs
