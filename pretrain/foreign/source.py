"""One ResNet read from a file: found, renamed to torchvision's keys, checked against what the
file says about itself, with its stem geometry and stride convention."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pretrain.backbones import RESNETS, arch_of, build_resnet, stem_of
from pretrain.checkpoint import CheckpointError
from pretrain.foreign.claims import check_claims, embedded_suite_meta, read_claims, stem_geometry
from pretrain.foreign.copies import choose
from pretrain.foreign.messages import preview
from pretrain.foreign.naming import is_solo_learn, source_format, to_torchvision
from pretrain.foreign.reading import read_file
from pretrain.foreign.stride import stride_convention
from pretrain.foreign.walk import MAX_DEPTH, checked_tensor, flatten


@dataclass(frozen=True)
class ForeignBackbone:
    """One ResNet read from a file."""

    state: dict[str, torch.Tensor]         # torchvision keys, float32, no fc
    source_state: dict[str, torch.Tensor]  # the same tensors under the file's names (no prefix)
    naming: str                            # torchvision | sequential | detectron2
    meta: dict[str, Any]                   # arch, stem, stride_in_1x1, copy, source_* (+ suite's)


def read_backbone(path: str | os.PathLike, prefix: str | None = None,
                  stride_in_1x1: bool | None = None, stem: str | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A torchvision-keyed ResNet state_dict (no ``fc.*``, float32) and its meta: see
    :func:`read_source`."""
    source = read_source(path, prefix, stride_in_1x1, stem)
    return source.state, source.meta


def read_source(path: str | os.PathLike, prefix: str | None = None,
                stride_in_1x1: bool | None = None, stem: str | None = None) -> ForeignBackbone:
    """The ResNet in ``path``. ``prefix`` chooses among several copies (the full key path, e.g.
    ``state_dict.module.encoder_q.``, or the part inside its container); ``stride_in_1x1`` says
    the stride convention and ``stem`` the stem geometry where the file does not. meta:
    ``arch``, ``stem``, ``stem_from``, ``stride_in_1x1``, ``stride_from``, ``copy``,
    ``source_format``, ``source_prefix`` and the suite's own meta (method, regularizer, data,
    epochs, ...) when the file has it."""
    path = Path(path)
    content, suite_meta = read_file(path)
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: holds a '{type(content).__name__}' object, not a dict of "
                              "tensors (a state_dict or a checkpoint containing one)")
    suite_meta = suite_meta or embedded_suite_meta(path, content)
    tensors, cut = flatten(path, content)
    deep = f" (containers nested deeper than {MAX_DEPTH} levels were not searched)" if cut else ""
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors{deep}; expected a ResNet state_dict or "
                              "a checkpoint containing one")
    container, chosen_prefix, naming, copy = choose(path, tensors, prefix, deep)
    where = container + chosen_prefix
    mapped: dict[str, tuple[str, Any]] = {}
    unmapped = []
    for (c, key), value in tensors.items():
        if c != container or not key.startswith(chosen_prefix):
            continue
        name = to_torchvision(naming, key[len(chosen_prefix):])
        if name is None:
            unmapped.append(c + key)
        elif name:
            mapped[name] = (key[len(chosen_prefix):], value)
    if unmapped:
        raise CheckpointError(
            f"{path}: {len(unmapped)} key(s) under {where!r} do not map to a torchvision ResNet: "
            f"{preview(unmapped, 12)}. (A deep stem, 'conv1.0', is a ResNet-D/v1c, not "
            "supported; a different prefix can be chosen with --prefix.)")
    try:
        arch, shape_stem = arch_of(mapped), stem_of({k: v for k, (_, v) in mapped.items()})
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: not a ResNet-18/34/50 under {where!r}: {err}") from err
    _check_layout(path, mapped, arch, shape_stem, where)
    state: dict[str, torch.Tensor] = {}
    source_state: dict[str, torch.Tensor] = {}
    for name, (key, value) in mapped.items():  # shapes are right: values may now be read
        state[name] = source_state[key] = checked_tensor(path, where + key, value)
    claims = read_claims(content)
    check_claims(path, claims, arch, shape_stem)
    stem_name, stem_from = stem_geometry(path, shape_stem, claims, suite_meta,
                                         is_solo_learn(tensors, container, chosen_prefix), stem)
    stride, stride_from = stride_convention(path, content, suite_meta, claims, naming, arch,
                                            where, stride_in_1x1)
    template = resnet_skeleton(arch, stem_name).state_dict()
    for key, value in template.items():  # absent in some older checkpoints; never used in eval
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros(value.shape, dtype=value.dtype)
    state = {k: state[k].to(template[k].dtype).contiguous() for k in template}
    meta = {**suite_meta, "arch": arch, "stem": stem_name, "stem_from": stem_from,
            "stride_in_1x1": stride, "stride_from": stride_from, "copy": copy,
            "source_format": "suite" if suite_meta else source_format(
                content, tensors, container, chosen_prefix, naming),
            "source_prefix": where}
    return ForeignBackbone(state, source_state, naming, meta)


def _check_layout(path: Path, mapped: dict[str, tuple[str, Any]], arch: str, stem: str,
                  where: str) -> None:
    """Every tensor of ``arch`` present, none extra, each of its shape (read from the file's
    headers only); a network with every key and other widths is named as the wide ResNet or
    ResNeXt it is, not as an incomplete one."""
    template = resnet_skeleton(arch, stem).state_dict()
    missing = sorted(k for k in set(template) - set(mapped)
                     if not k.endswith("num_batches_tracked"))
    extra = sorted(set(mapped) - set(template))
    shapes = [f"{k} {tuple(mapped[k][1].shape)} (expected {tuple(v.shape)})"
              for k, v in template.items() if k in mapped and tuple(mapped[k][1].shape)
              != tuple(v.shape)]
    if shapes and not missing and not extra:
        conv2 = "layer1.0.conv2.weight"
        got, expected = tuple(mapped[conv2][1].shape), tuple(template[conv2].shape)
        kind = ("a ResNeXt (grouped 3x3 convs)" if got[1] * 2 <= got[0] else
                "a wide ResNet (wider bottlenecks)") if got != expected else "a modified ResNet"
        raise CheckpointError(
            f"{path}: {kind} under {where!r}, not a plain {arch}: {len(shapes)} tensor(s) have "
            f"other shapes ({preview(shapes, 3)}); the suite reads plain ResNet-18/34/50 only "
            f"({', '.join(RESNETS)})")
    if missing or extra or shapes:
        raise CheckpointError(
            f"{path}: incomplete {arch} ({stem} stem) under {where!r}: missing {len(missing)}: "
            f"{preview(missing, 12)}; unexpected {len(extra)}: {preview(extra, 12)}; wrong shape "
            f"{len(shapes)}: {preview(shapes, 6)}")


def resnet_skeleton(arch: str, stem: str) -> torch.nn.Module:
    """:func:`~pretrain.backbones.build_resnet`'s module on the meta device: shapes and dtypes
    without the cost of a random init, for a network whose every tensor is about to be loaded
    (``.to_empty(device="cpu")`` then ``load_state_dict``)."""
    with torch.device("meta"):
        return build_resnet(arch, stem)
