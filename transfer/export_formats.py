"""The two engine formats a backbone is written in (what :mod:`transfer.convert` writes and
:mod:`transfer.export_check` verifies): detectron2's pickle of MoCo-renamed numpy arrays and
mmpose's ``torch.save`` of torchvision keys. The layouts are described in transfer/convert.py."""
from __future__ import annotations

import io
import json
import pickle
import re
from typing import Any

import torch

from pretrain.checkpoint import META_KEY, CheckpointError

TARGETS = ("detectron2", "mmpose")
DETECTRON2_AUTHOR = "ssl-transfer-suite transfer/convert.py"


class ConversionError(CheckpointError):
    """A backbone that cannot be written for an engine completely and exactly; says why."""


def detectron2_name(key: str) -> str:
    """MoCo's renaming of a torchvision ResNet key into detectron2's ResNet names."""
    if not key.startswith("layer"):
        key = "stem." + key
    key = re.sub(r"layer([1-4])", lambda m: f"res{int(m.group(1)) + 1}", key)
    key = re.sub(r"bn([1-3])", r"conv\1.norm", key)
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def detectron2_bytes(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    model = {detectron2_name(k): v.numpy() for k, v in state.items()
             if not k.endswith("num_batches_tracked")}
    return pickle.dumps({"model": model, "__author__": DETECTRON2_AUTHOR,
                         "matching_heuristics": True, META_KEY: json.dumps(meta)}, protocol=4)


def mmpose_bytes(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "meta": {META_KEY: json.dumps(meta),
                                              "style": mmpose_style(meta)}}, buffer)
    return buffer.getvalue()


def mmpose_style(meta: dict[str, Any]) -> str:
    """mmpose's (mmcv's) ResNet ``style`` of a backbone: 'caffe' puts the stride in the 1x1."""
    return "caffe" if meta.get("stride_in_1x1") else "pytorch"
