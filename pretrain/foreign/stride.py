"""The stride convention of a bottleneck ResNet, read from its file.

torchvision puts each stage's stride 2 in the 3x3 conv of its first block; detectron2's default
(``MODEL.RESNETS.STRIDE_IN_1X1 True``, MSRA/Caffe2 style) and mmcv's ``style='caffe'`` put it in
the first 1x1 conv. The weights have the same shapes either way, so the file must say it, in this
order: the suite's own metadata; an mmengine file's config (``model.backbone.style``); for
detectron2 names, ``__author__`` of MoCo's and detectron2's torchvision converters, or the
``config.yaml`` detectron2's ``default_setup`` writes beside its checkpoints. Otherwise
``--stride-in-1x1 true|false`` must say it, except for a torchvision-named file that is no mmengine
file (torchvision, timm, MoCo, solo-learn, lightly and VISSL all build torchvision's ResNet).
``meta["stride_in_1x1"]`` carries the result and ``meta["stride_from"]`` where it was read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pretrain.backbones import RESNETS
from pretrain.checkpoint import META_KEY, CheckpointError
from pretrain.foreign.claims import Claims, mm_stride

CONFIG_BESIDE = "config.yaml"   # what detectron2's default_setup writes beside its checkpoints
# __author__ of detectron2-named files converted from a torchvision ResNet: MoCo's
# detection/convert-pretrain-to-detectron2.py ("MOCO"; its configs set STRIDE_IN_1X1 False) and
# detectron2's tools/convert-torchvision-to-d2.py ("torchvision"; its docstring says to set
# STRIDE_IN_1X1 False).
TORCHVISION_CONVERTERS = {"MOCO": "MoCo's converter", "torchvision": "detectron2's converter"}
STRIDE_CONVENTIONS = (
    "detectron2's default (MODEL.RESNETS.STRIDE_IN_1X1 True, MSRA/Caffe2 style, mmcv's "
    "style='caffe') puts each stage's stride 2 in the first 1x1 conv of its first bottleneck; "
    "torchvision (and MoCo-converted files, STRIDE_IN_1X1 False) puts it in the 3x3 conv; the "
    "weights have the same shapes either way but give different features")


def stride_convention(path: Path, content: dict, suite_meta: dict[str, Any], claims: Claims,
                      naming: str, arch: str, where: str, flag: bool | None) -> tuple[bool, str]:
    """(stride_in_1x1, where that was read) of the network in ``path``; see the module doc."""
    if not RESNETS[arch].bottleneck:
        if flag:
            raise CheckpointError(f"--stride-in-1x1 true: {path} holds a {arch}, whose basic "
                                  "blocks have their stride in a 3x3 conv in every convention; "
                                  "the flag is for bottleneck ResNets (resnet50)")
        return False, "basic blocks: one convention"
    declared, source = _declared_stride(path, content, suite_meta, claims, naming)
    if declared is not None:
        if flag is not None and flag != declared:
            raise CheckpointError(f"--stride-in-1x1 {str(flag).lower()}: {path} says "
                                  f"stride_in_1x1={declared} ({source}); drop the flag or fix "
                                  "the file")
        return declared, source
    if flag is not None:
        return flag, "--stride-in-1x1"
    if naming == "detectron2":
        raise CheckpointError(
            f"{path}: a {arch} with detectron2's names under {where!r} that does not say which "
            f"stride convention it was trained with: {STRIDE_CONVENTIONS}. Pass --stride-in-1x1 "
            "true if it was trained from a default detectron2 config (e.g. saved by its "
            "DetectionCheckpointer), --stride-in-1x1 false if it started as a torchvision ResNet")
    if claims.mmengine:
        raise CheckpointError(
            f"{path}: an mmengine/mmcv {arch} under {where!r} whose meta has no readable config "
            "(meta['cfg'] model.backbone) to say its style, 'pytorch' (stride in the 3x3 conv) "
            "or 'caffe' (stride in the 1x1 conv); pass --stride-in-1x1 false for 'pytorch', "
            "--stride-in-1x1 true for 'caffe'")
    return False, "torchvision names: torchvision's convention"


def _declared_stride(path: Path, content: dict, suite_meta: dict[str, Any], claims: Claims,
                     naming: str) -> tuple[bool | None, str]:
    """The convention the file (or, for detectron2 names, the config beside it) declares."""
    if "stride_in_1x1" in suite_meta:
        if not isinstance(suite_meta["stride_in_1x1"], bool):
            raise CheckpointError(f"{path}: its {META_KEY} has stride_in_1x1="
                                  f"{suite_meta['stride_in_1x1']!r}, not true or false")
        return suite_meta["stride_in_1x1"], f"its {META_KEY}"
    if naming != "detectron2":
        return mm_stride(path, claims)
    author = content.get("__author__")
    if isinstance(author, str) and author in TORCHVISION_CONVERTERS \
            and content.get("matching_heuristics") is True:
        return False, (f"__author__ {author!r}: {TORCHVISION_CONVERTERS[author]} from a "
                       "torchvision ResNet")
    return _stride_from_config_beside(path)


def _stride_from_config_beside(path: Path) -> tuple[bool | None, str]:
    """MODEL.RESNETS.STRIDE_IN_1X1 of the detectron2 config dumped beside ``path`` (detectron2's
    ``default_setup`` writes OUTPUT_DIR/config.yaml, and its checkpoints go to OUTPUT_DIR), read
    with ``yaml.safe_load``; (None, "") when there is none."""
    import yaml

    config = path.parent / CONFIG_BESIDE
    if not config.is_file() or config.stat().st_size > (1 << 20):
        return None, ""
    try:
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None, ""
    resnets = doc.get("MODEL", {}).get("RESNETS", {}) if isinstance(doc, dict) else {}
    value = resnets.get("STRIDE_IN_1X1") if isinstance(resnets, dict) else None
    if not isinstance(value, bool):
        return None, ""
    return value, f"MODEL.RESNETS.STRIDE_IN_1X1 in {config}"
