"""The three namings of a ResNet's keys, mapped to torchvision's, and which library wrote a file.

- torchvision (also timm, mmpretrain/mmselfsup/mmcv and solo-learn ResNets): ``conv1``, ``bn1``,
  ``layerN.i.{convK,bnK,downsample.0/1}``; prefixes seen in the wild: none (torchvision, timm),
  ``module.encoder_q.`` (MoCo v1/v2), ``module.base_encoder.`` (MoCo v3), ``backbone.``
  (solo-learn, mmpretrain, lightly), ``_feature_blocks.`` (VISSL), ``module.`` (DataParallel);
- ``nn.Sequential(*list(resnet.children())[:-1])`` (lightly's examples): ``0``=conv1,
  ``1``=bn1, ``4``..``7``=layer1..4;
- detectron2 (``stem.conv1``, ``resN.i.convK.norm``, ``shortcut``): a MoCo-converted ``.pkl``,
  or a model saved by detectron2's ``DetectionCheckpointer`` (``model.backbone.bottom_up.``).
"""
from __future__ import annotations

import re
from typing import Any

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
TORCHVISION_KEY = re.compile(
    rf"^(conv1\.weight|bn1\.{_BN}|layer[1-4]\.\d+\.(conv[1-3]\.weight|bn[1-3]\.{_BN}"
    rf"|downsample\.0\.weight|downsample\.1\.{_BN}))$")
SEQUENTIAL_TO_TORCHVISION = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2",
                             "6": "layer3", "7": "layer4"}
# A key that identifies each naming (after the prefix).
ANCHORS = {"torchvision": "layer1.0.conv1.weight", "sequential": "4.0.conv1.weight",
           "detectron2": "res2.0.conv1.weight"}
CAFFE2_KEY = re.compile(r"^(res\d+_\d+_branch|res_conv1_bn_|conv1_w$)")
LIGHTNING_KEY = "pytorch-lightning_version"
# A solo-learn module's online linear classifier (solo/methods/base.py: self.classifier), beside
# its ``backbone``.
SOLO_CLASSIFIER = "classifier.weight"


def to_torchvision(naming: str, key: str) -> str | None:
    """The torchvision name of ``key`` (prefix removed) in ``naming``; "" for a dropped
    classifier key; None when it does not map."""
    if naming == "sequential":
        head, _, rest = key.partition(".")
        key = f"{SEQUENTIAL_TO_TORCHVISION[head]}.{rest}" if head in SEQUENTIAL_TO_TORCHVISION \
            else key
    elif naming == "detectron2":
        if key.startswith("stem.fc."):  # MoCo's converter files the classifier under stem.
            return ""
        key = re.sub(r"^stem\.conv1\.norm\.", "bn1.", key)
        key = re.sub(r"^stem\.", "", key)
        key = re.sub(r"^res([2-5])\.", lambda m: f"layer{int(m.group(1)) - 1}.", key)
        key = re.sub(r"\.conv([1-3])\.norm\.", r".bn\1.", key)
        key = key.replace(".shortcut.norm.", ".downsample.1.").replace(".shortcut.weight",
                                                                      ".downsample.0.weight")
    if key.startswith("fc.") or (naming == "sequential" and key.startswith("9.")):
        return ""
    return key if TORCHVISION_KEY.match(key) else None


def candidates(tensors: dict[tuple[str, str], Any]) -> list[tuple[str, str, str]]:
    """(container, prefix, naming) of every ResNet found among the keys."""
    found = set()
    for container, key in tensors:
        for naming, anchor in ANCHORS.items():
            if key.endswith(anchor):
                prefix = key[: -len(anchor)]
                if prefix == "" or prefix.endswith("."):
                    found.add((container, prefix, naming))
    return sorted(found)


def is_solo_learn(tensors: dict[tuple[str, str], Any], container: str, prefix: str) -> bool:
    """A solo-learn module: its backbone (``backbone.`` or ``momentum_backbone.``) beside the
    online classifier that solo-learn's BaseMethod always has."""
    return prefix.endswith("backbone.") and \
        (container, prefix[: -len("backbone.")].removesuffix("momentum_") + SOLO_CLASSIFIER) \
        in tensors


def source_format(content: dict, tensors: dict[tuple[str, str], Any], container: str,
                  prefix: str, naming: str) -> str:
    """The library that wrote the file, from what the whole file shows (its top-level keys and
    the copy's key path); "prefix '...'" when nothing names one."""
    if naming == "detectron2":
        return "detectron2"
    where, meta = container + prefix, content.get("meta")
    if "message_hub" in content or isinstance(meta, dict) and "mmengine_version" in meta:
        return "mmengine Runner (mmpretrain/mmselfsup/mmpose)"
    if is_solo_learn(tensors, container, prefix):
        return "solo-learn"
    if "dino_loss" in content or {"student", "teacher"} <= set(content):
        return "DINO (facebookresearch/dino)"
    if LIGHTNING_KEY in content:
        return "PyTorch Lightning module" + (" (nn.Sequential, as lightly's examples)"
                                             if naming == "sequential" else "")
    if re.search(r"(^|[._])(online|target)[._]", where):
        return f"online/target (BYOL-style) file, prefix {where!r}"
    if naming == "sequential":
        return "nn.Sequential ResNet (lightly's examples)"
    if "args" in content and "arch" in content and "version" in content:
        return "timm CheckpointSaver"
    for marker, name in (("encoder_q.", "MoCo v1/v2"), ("base_encoder.", "MoCo v3"),
                         ("_feature_blocks.", "VISSL")):
        if where.endswith(marker):
            return name
    if prefix == "":
        return "torchvision/timm state_dict"
    return f"prefix {where!r}"
