"""Reading a ResNet backbone from any supported checkpoint, without executing code from the file.

:func:`read_backbone` returns a torchvision-keyed ResNet state_dict (no ``fc.*``, float32) and its
metadata. The source may be the suite's backbone checkpoint or a ResNet trained elsewhere. Nested
containers are flattened (``state_dict``, ``model``, VISSL's ``classy_state_dict.base_model.model.
trunk``, ...) and the backbone is found by its keys, under any prefix, in one of three namings:

- torchvision (also timm, mmselfsup/mmcv and solo-learn ResNets): ``conv1``, ``bn1``,
  ``layerN.i.{convK,bnK,downsample.0/1}``; prefixes seen in the wild: none (torchvision, timm),
  ``module.encoder_q.`` (MoCo v1/v2), ``module.base_encoder.`` (MoCo v3), ``backbone.``
  (solo-learn, mmselfsup, lightly), ``_feature_blocks.`` (VISSL), ``module.`` (DataParallel);
- ``nn.Sequential(*list(resnet.children())[:-1])`` (lightly's examples): ``0``=conv1,
  ``1``=bn1, ``4``..``7``=layer1..4;
- detectron2 (``stem.conv1``, ``resN.i.convK.norm``, ``shortcut``): e.g. a MoCo-converted ``.pkl``.

Momentum / key / target / teacher / EMA copies are skipped when the online encoder is present;
two candidates left is an error that asks for ``--prefix``. Every key under the chosen prefix must
map (classifier ``fc.*`` is dropped) and every ResNet tensor must be there with its shape, else
:class:`~pretrain.checkpoint.CheckpointError` lists the unmapped, missing and mis-shaped keys.
Files are read without executing code: safetensors, ``torch.load(weights_only=True)``, or for
``.pkl`` an unpickler that admits only numpy arrays and plain containers
(:mod:`pretrain.checkpoint`). Caffe2-named weights (detectron2's ImageNetPretrained/MSRA: BGR
input, stride in the 1x1 conv) are refused.

No engine is imported here: writing engine formats and verifying them is ``transfer/convert.py``'s.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.backbones import arch_of, build_resnet, stem_of
from pretrain.checkpoint import (
    META_KEY,
    CheckpointError,
    existing_file,
    load_backbone,
    load_pickle_arrays,
    load_torch,
)

# Substrings of a prefix that mark a second copy of the encoder (momentum, key, teacher, EMA).
SECOND_COPY = ("encoder_k", "momentum", "target", "teacher", "ema")
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


def read_backbone(path: str | os.PathLike, prefix: str | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A torchvision-keyed ResNet state_dict (no ``fc.*``, float32) and its meta, from any
    supported checkpoint. meta: ``arch``, ``stem``, ``source_format``, ``source_prefix`` and the
    suite's own meta (method, regularizer, data, epochs, ...) when the file has it."""
    path = Path(path)
    content, suite_meta = _read_file(path)
    tensors = _flatten(content)
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors (a {type(content).__name__}); expected "
                              "a ResNet state_dict or a checkpoint containing one")
    container, chosen_prefix, naming = _choose(path, tensors, prefix)
    state: dict[str, torch.Tensor] = {}
    unmapped = []
    for (c, key), value in tensors.items():
        if c != container or not key.startswith(chosen_prefix):
            continue
        name = _to_torchvision(naming, key[len(chosen_prefix):])
        if name is None:
            unmapped.append(c + key)
        elif name:
            state[name] = value
    if unmapped:
        raise CheckpointError(
            f"{path}: {len(unmapped)} key(s) under {container + chosen_prefix!r} do not map to a "
            f"torchvision ResNet: {preview(unmapped, 12)}. (A deep stem, 'conv1.0', is a "
            "ResNet-D/v1c, not supported; a different head prefix can be chosen with --prefix.)")
    try:
        arch, stem = arch_of(state), stem_of(state)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: not a ResNet-18/34/50 under "
                              f"{container + chosen_prefix!r}: {err}") from err
    template = build_resnet(arch, stem).state_dict()
    for key, value in template.items():  # absent in some older checkpoints; never used in eval
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = sorted(set(template) - set(state))
    extra = sorted(set(state) - set(template))
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
              for k, v in template.items() if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        raise CheckpointError(
            f"{path}: incomplete {arch} ({stem} stem) under {container + chosen_prefix!r}: "
            f"missing {len(missing)}: {preview(missing, 12)}; unexpected {len(extra)}: "
            f"{preview(extra, 12)}; wrong shape {len(shapes)}: {preview(shapes, 6)}")
    state = {k: state[k].to(template[k].dtype).contiguous() for k in template}
    meta = {**suite_meta, "arch": arch, "stem": stem,
            "source_format": "suite" if suite_meta else _source_format(container, chosen_prefix,
                                                                       naming),
            "source_prefix": container + chosen_prefix}
    return state, meta


def preview(keys: list[str], n: int = 8) -> str:
    """The first ``n`` of ``keys``, and how many there are in all: for error messages."""
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _read_file(path: Path) -> tuple[Any, dict[str, Any]]:
    """The file's contents, read without executing code, with the suite meta when present."""
    existing_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or head[8:10] == b'{"':
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_backbone(path)
        except CheckpointError as err:
            if META_KEY not in str(err):
                raise
        try:
            return load_file(str(path)), {}
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if path.suffix in (".pkl", ".pickle"):
        return load_pickle_arrays(path), {}
    try:
        return load_torch(path), {}
    except CheckpointError:
        if head[:1] != b"\x80":  # a plain pickle (numpy arrays, e.g. a renamed .pkl) gets a try
            raise
        return load_pickle_arrays(path), {}


def _flatten(obj: Any, container: str = "") -> dict[tuple[str, str], torch.Tensor]:
    """{(container path, key): tensor} of every tensor or array in nested dicts."""
    found: dict[tuple[str, str], torch.Tensor] = {}
    if not isinstance(obj, dict):
        return found
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            found[(container, str(key))] = value
        elif isinstance(value, np.ndarray) and value.dtype != object:
            found[(container, str(key))] = torch.from_numpy(np.array(value))
        elif isinstance(value, dict):
            found.update(_flatten(value, f"{container}{key}."))
    return found


def _to_torchvision(naming: str, key: str) -> str | None:
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


def _candidates(tensors: dict[tuple[str, str], torch.Tensor]) -> list[tuple[str, str, str]]:
    """(container, prefix, naming) of every ResNet found among the keys."""
    found = set()
    for container, key in tensors:
        for naming, anchor in ANCHORS.items():
            if key.endswith(anchor):
                prefix = key[: -len(anchor)]
                if prefix == "" or prefix.endswith("."):
                    found.add((container, prefix, naming))
    return sorted(found)


def _source_format(container: str, prefix: str, naming: str) -> str:
    if naming == "detectron2":
        return "detectron2"
    if naming == "sequential":
        return "lightly (nn.Sequential)"
    where = container + prefix
    for marker, name in (("encoder_q.", "moco"), ("base_encoder.", "moco-v3"),
                         ("_feature_blocks.", "vissl"),
                         ("backbone.", "solo-learn/mmselfsup/lightly"),
                         ("module.", "torchvision (DataParallel)")):
        if where.endswith(marker):
            return name
    return "torchvision/timm" if prefix == "" else f"prefix {prefix!r}"


def _choose(path: Path, tensors: dict[tuple[str, str], torch.Tensor],
            prefix: str | None) -> tuple[str, str, str]:
    keys = [c + k for c, k in tensors]
    if any(CAFFE2_KEY.match(k) for _, k in tensors):
        raise CheckpointError(
            f"{path}: Caffe2/Detectron-style names (e.g. res2_0_branch2a_w): such weights expect "
            "BGR input and stride in the 1x1 conv, so they are not a torchvision ResNet. Use them "
            "with detectron2's own MSRA configs directly; the suite reads torchvision-style "
            "ResNets")
    candidates = _candidates(tensors)
    if prefix is not None:
        candidates = [c for c in candidates if c[1] == prefix]
        if not candidates:
            found = sorted({c[1] for c in _candidates(tensors)})
            raise CheckpointError(
                f"{path}: no ResNet keys under --prefix {prefix!r} (no '{prefix}layer1.0.conv1."
                f"weight' or equivalent). ResNets found under: "
                f"{', '.join(repr(p) for p in found) or 'none'}; first keys: {preview(keys)}")
    chosen = [c for c in candidates
              if not any(m in (c[0] + c[1]).lower() for m in SECOND_COPY)] or candidates
    if not chosen:
        raise CheckpointError(
            f"{path}: no ResNet backbone found (no 'layer1.0.conv1.weight', 'res2.0.conv1.weight' "
            f"or '4.0.conv1.weight' under any prefix). Keys: {preview(keys)}"
            + (" - only a classifier head?" if keys and all(".fc." in f".{k}" for k in keys)
               else ""))
    if len(chosen) > 1:
        raise CheckpointError(
            f"{path}: several ResNets in one file, under "
            f"{', '.join(repr(c[0] + c[1]) for c in chosen)}; pick one with --prefix "
            "(the part of the key before 'conv1.weight')")
    return chosen[0]
