"""torchvision ResNet backbones, with an optional small-image stem for 32-64 px data."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

ARCHS = ("resnet18", "resnet34", "resnet50")
FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
STEMS = ("imagenet", "small")
STAGES = ("res2", "res3", "res4", "res5")


def build_resnet(arch: str = "resnet18", stem: str = "imagenet",
                 zero_init_residual: bool = False) -> nn.Module:
    """A torchvision ResNet without its classifier (``fc`` is Identity, so no ``fc.*`` keys).

    ``stem="small"`` replaces the 7x7/2 conv and max-pool with a 3x3/1 conv (the CIFAR stem used
    by SimCLR, solo-learn and the seeds for small images). Its ``conv1.weight`` has shape
    (64, 3, 3, 3), which is how checkpoints record it too.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    model = getattr(torchvision.models, arch)(weights=None, zero_init_residual=zero_init_residual)
    if stem == "small":
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def stem_of(state_dict: dict[str, torch.Tensor]) -> str:
    """Which stem a torchvision-keyed ResNet state_dict has, read from ``conv1.weight``'s shape."""
    return "small" if state_dict["conv1.weight"].shape[-1] == 3 else "imagenet"


def arch_of(state_dict: dict[str, torch.Tensor]) -> str:
    """Infer resnet18/34/50 from the keys of a torchvision-keyed state_dict."""
    bottleneck = "layer1.0.conv3.weight" in state_dict
    blocks_in_layer3 = len({k.split(".")[1] for k in state_dict if k.startswith("layer3.")})
    if bottleneck:
        if blocks_in_layer3 != 6:
            raise ValueError(f"bottleneck ResNet with {blocks_in_layer3} blocks in layer3 is not "
                             "resnet50; only resnet18/34/50 are supported")
        return "resnet50"
    basic = {2: "resnet18", 6: "resnet34"}
    if blocks_in_layer3 not in basic:
        raise ValueError(f"basic-block ResNet with {blocks_in_layer3} blocks in layer3 is neither "
                         "resnet18 nor resnet34")
    return basic[blocks_in_layer3]


def stage_outputs(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """res2..res5 feature maps of a torchvision ResNet (detectron2's names for layer1..layer4)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    outputs = {}
    for name, layer in zip(STAGES, (model.layer1, model.layer2, model.layer3, model.layer4)):
        x = layer(x)
        outputs[name] = x
    return outputs
