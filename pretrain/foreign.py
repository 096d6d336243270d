"""Reading a ResNet backbone from any supported checkpoint, without executing code from the file.

:func:`read_source` returns the backbone as a torchvision-keyed ResNet state_dict (no ``fc.*``,
float32), the same tensors under the file's own names (for the self-check against the network as
it was trained), and its metadata; :func:`read_backbone` returns the first and the last. The source
may be the suite's backbone checkpoint or a ResNet trained elsewhere. Nested containers are
searched (``state_dict``, ``model``, VISSL's ``classy_state_dict.base_model.model.trunk``, ...),
each container once and at most :data:`MAX_DEPTH` deep, and the backbone is found by its keys,
under any prefix, in one of three namings:

- torchvision (also timm, mmpretrain/mmselfsup/mmcv and solo-learn ResNets): ``conv1``, ``bn1``,
  ``layerN.i.{convK,bnK,downsample.0/1}``; prefixes seen in the wild: none (torchvision, timm),
  ``module.encoder_q.`` (MoCo v1/v2), ``module.base_encoder.`` (MoCo v3), ``backbone.``
  (solo-learn, mmpretrain, lightly), ``_feature_blocks.`` (VISSL), ``module.`` (DataParallel);
- ``nn.Sequential(*list(resnet.children())[:-1])`` (lightly's examples): ``0``=conv1,
  ``1``=bn1, ``4``..``7``=layer1..4;
- detectron2 (``stem.conv1``, ``resN.i.convK.norm``, ``shortcut``): a MoCo-converted ``.pkl``,
  or a model saved by detectron2's ``DetectionCheckpointer`` (``model.backbone.bottom_up.``).

**Which copy** (:func:`_pick`), when a file holds several ResNets: EMA copies (timm's
``state_dict_ema``, ``model_ema``, ``ema_*``) only when ``--prefix`` names them; a student and a
teacher: the teacher (DINO and the self-distillation methods after it evaluate the teacher); an
online/query encoder and its momentum/target/key copy: the online one (MoCo, BYOL and SimSiam
evaluate it), except that a momentum copy trained by self-distillation is the teacher (the file
has DINO's weight-normalised prototype layer, ``last_layer.weight_g``, as solo-learn's DINO
writes its teacher as ``momentum_backbone``). Plain names (``backbone`` and ``momentum_backbone``)
only say which is online when the file shows its method (a predictor: BYOL/SimSiam; a queue or
memory bank: MoCo; a DINO head); otherwise, as for any other two copies, the choice is refused
and the prefixes are listed for ``--prefix``. The rule applied is stated in ``meta["copy"]``.

**Stride convention** of bottleneck ResNets (:func:`_stride_convention`): torchvision puts each
stage's stride 2 in the 3x3 conv of its first block, detectron2's default
(``MODEL.RESNETS.STRIDE_IN_1X1 True``, MSRA/Caffe2 style) in the first 1x1 conv, mmcv calls
that ``style='caffe'``. The weights have the same shapes either way, so the file must say it: a
torchvision-named ResNet is torchvision's; a detectron2-named one is read from the file (the
suite's own metadata, ``__author__`` of MoCo's and detectron2's torchvision converters, or the
``config.yaml`` detectron2's ``default_setup`` writes beside its checkpoints), else it is refused
unless ``--stride-in-1x1 true|false`` says it. ``meta["stride_in_1x1"]`` carries the result.

**Reading** (:func:`_read_file`): safetensors; ``.pkl`` through the arrays-only unpickler
(:mod:`pretrain.checkpoint`); anything else through ``torch.load(weights_only=True)`` with an
allow-list of the inert objects real training files hold (:data:`TRAINING_FILE_GLOBALS`:
``argparse.Namespace`` in timm's ``CheckpointSaver`` files, mmengine's ``HistoryBuffer`` in every
Runner checkpoint, numpy arrays, scalars and dtypes). Those objects are rebuilt as attribute-only
stand-ins, so no code of their libraries runs either. A file holding any other object is refused
with its name and what to do; a Git LFS pointer is named as such. Every backbone tensor must be a
finite floating-point (``num_batches_tracked``: integer) dense tensor.

No engine is imported here: writing engine formats and verifying them is ``transfer/convert.py``'s.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import re
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.backbones import RESNETS, arch_of, build_resnet, stem_of
from pretrain.checkpoint import (
    META_KEY,
    CheckpointError,
    NotWrittenBySuite,
    existing_file,
    load_backbone,
    load_pickle_arrays,
)

MAX_DEPTH = 16                  # containers nested deeper than this are not searched
MAX_ENTRIES = 2_000_000         # dict entries visited in one file
MAX_FILE_BYTES = 4 << 30        # far above any ResNet-50 training checkpoint
LFS_POINTER = b"version https://git-lfs"
CONFIG_BESIDE = "config.yaml"   # what detectron2's default_setup writes beside its checkpoints
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
# __author__ of detectron2-named files converted from a torchvision ResNet: MoCo's
# detection/convert-pretrain-to-detectron2.py ("MOCO"; its configs set STRIDE_IN_1X1 False) and
# detectron2's tools/convert-torchvision-to-d2.py ("torchvision"; its docstring says to set
# STRIDE_IN_1X1 False).
TORCHVISION_CONVERTERS = {"MOCO": "MoCo's converter", "torchvision": "detectron2's converter"}
# Evidence of the method that trained a file, from keys anywhere in its container.
DINO_HEAD = re.compile(
    r"(^|\.)last_layer\.(weight_g|weight_v|parametrizations\.weight\.original[01])$")
PREDICTOR = {"predictor", "prediction_head", "predictor_head"}
MOCO_QUEUE = {"queue", "queue_ptr", "memory_bank"}


@dataclass(frozen=True)
class ForeignBackbone:
    """One ResNet read from a file."""

    state: dict[str, torch.Tensor]         # torchvision keys, float32, no fc
    source_state: dict[str, torch.Tensor]  # the same tensors under the file's names (no prefix)
    naming: str                            # torchvision | sequential | detectron2
    meta: dict[str, Any]                   # arch, stem, stride_in_1x1, copy, source_* (+ suite's)


def read_backbone(path: str | os.PathLike, prefix: str | None = None,
                  stride_in_1x1: bool | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A torchvision-keyed ResNet state_dict (no ``fc.*``, float32) and its meta: see
    :func:`read_source`."""
    source = read_source(path, prefix, stride_in_1x1)
    return source.state, source.meta


def read_source(path: str | os.PathLike, prefix: str | None = None,
                stride_in_1x1: bool | None = None) -> ForeignBackbone:
    """The ResNet in ``path``. ``prefix`` chooses among several copies (the full key path, e.g.
    ``state_dict.module.encoder_q.``, or the part inside its container); ``stride_in_1x1`` says
    the stride convention where the file does not. meta: ``arch``, ``stem``, ``stride_in_1x1``,
    ``stride_from``, ``copy``, ``source_format``, ``source_prefix`` and the suite's own meta
    (method, regularizer, data, epochs, ...) when the file has it."""
    path = Path(path)
    content, suite_meta = _read_file(path)
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: holds a '{type(content).__name__}' object, not a dict of "
                              "tensors (a state_dict or a checkpoint containing one)")
    suite_meta = suite_meta or _embedded_suite_meta(path, content)
    tensors, cut = _flatten(path, content)
    deep = f" (containers nested deeper than {MAX_DEPTH} levels were not searched)" if cut else ""
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors{deep}; expected a ResNet state_dict or "
                              "a checkpoint containing one")
    container, chosen_prefix, naming, copy = _choose(path, tensors, prefix, deep)
    where = container + chosen_prefix
    state: dict[str, torch.Tensor] = {}
    source_state: dict[str, torch.Tensor] = {}
    unmapped = []
    for (c, key), value in tensors.items():
        if c != container or not key.startswith(chosen_prefix):
            continue
        name = _to_torchvision(naming, key[len(chosen_prefix):])
        if name is None:
            unmapped.append(c + key)
        elif name:
            tensor = _checked_tensor(path, c + key, value)
            state[name] = source_state[key[len(chosen_prefix):]] = tensor
    if unmapped:
        raise CheckpointError(
            f"{path}: {len(unmapped)} key(s) under {where!r} do not map to a torchvision ResNet: "
            f"{preview(unmapped, 12)}. (A deep stem, 'conv1.0', is a ResNet-D/v1c, not "
            "supported; a different prefix can be chosen with --prefix.)")
    try:
        arch, stem = arch_of(state), stem_of(state)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: not a ResNet-18/34/50 under {where!r}: {err}") from err
    template = resnet_skeleton(arch, stem).state_dict()
    for key, value in template.items():  # absent in some older checkpoints; never used in eval
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros(value.shape, dtype=value.dtype)
    missing = sorted(set(template) - set(state))
    extra = sorted(set(state) - set(template))
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
              for k, v in template.items() if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        raise CheckpointError(
            f"{path}: incomplete {arch} ({stem} stem) under {where!r}: missing {len(missing)}: "
            f"{preview(missing, 12)}; unexpected {len(extra)}: {preview(extra, 12)}; wrong shape "
            f"{len(shapes)}: {preview(shapes, 6)}")
    stride, stride_from = _stride_convention(path, content, suite_meta, naming, arch, where,
                                             stride_in_1x1)
    state = {k: state[k].to(template[k].dtype).contiguous() for k in template}
    meta = {**suite_meta, "arch": arch, "stem": stem, "stride_in_1x1": stride,
            "stride_from": stride_from, "copy": copy,
            "source_format": "suite" if suite_meta else _source_format(container, chosen_prefix,
                                                                       naming),
            "source_prefix": where}
    return ForeignBackbone(state, source_state, naming, meta)


def resnet_skeleton(arch: str, stem: str) -> torch.nn.Module:
    """:func:`~pretrain.backbones.build_resnet`'s module on the meta device: shapes and dtypes
    without the cost of a random init, for a network whose every tensor is about to be loaded
    (``.to_empty(device="cpu")`` then ``load_state_dict``)."""
    with torch.device("meta"):
        return build_resnet(arch, stem)


def preview(keys: list[str], n: int = 8) -> str:
    """The first ``n`` of ``keys``, and how many there are in all: for error messages."""
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


# ------------------------------------------------------------------------------------ reading
class _Inert:
    """An admitted object of a training file, rebuilt as its pickled attributes only: none of its
    library's code (``__init__``, ``__setstate__``) runs, and the library need not be installed."""

    qualified_name = ""

    def __repr__(self) -> str:
        return f"<{self.qualified_name} read as data>"


def _inert(qualified_name: str) -> tuple[type, str]:
    """A stand-in class admitted under ``qualified_name`` (torch's safe-globals tuple form)."""
    return type(qualified_name.rsplit(".", 1)[-1], (_Inert,),
                {"qualified_name": qualified_name}), qualified_name


_HISTORY_BUFFER = _inert("mmengine.logging.history_buffer.HistoryBuffer")
# mmengine's HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, name).
_HISTORY_BUFFER_METHODS = {"min", "max", "mean", "current"}


def _history_buffer_method(owner: Any, name: Any) -> str:
    """The only ``getattr`` a training file may call: a HistoryBuffer statistics method, which
    becomes its name."""
    if owner is not _HISTORY_BUFFER[0] or name not in _HISTORY_BUFFER_METHODS:
        raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not allowed")
    return f"HistoryBuffer.{name}"


def _numpy_globals() -> list[tuple[Any, str]]:
    """numpy's array, scalar and dtype reconstructors under both module paths (numpy 1: ``numpy.
    core``, numpy 2: ``numpy._core``): C code that rebuilds numbers from bytes."""
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1
        multiarray = importlib.import_module("numpy.core.multiarray")
    found = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for core in ("numpy.core", "numpy._core"):
        found += [(multiarray._reconstruct, f"{core}.multiarray._reconstruct"),
                  (multiarray.scalar, f"{core}.multiarray.scalar")]
    for code in "?bhilqBHILQefdFD":  # numpy 2 may name an array's dtype by its DType class
        kind = type(np.dtype(code))
        found.append((kind, f"numpy.dtypes.{kind.__name__}"))
    return found


# What a training file may hold besides tensors and plain containers: torch's weights_only reader
# admits these exact globals and nothing else.
TRAINING_FILE_GLOBALS: list[tuple[Any, str]] = [
    _inert("argparse.Namespace"),      # timm's CheckpointSaver: the training arguments
    _HISTORY_BUFFER,                   # mmengine Runner checkpoints: message_hub.log_scalars
    (_history_buffer_method, "builtins.getattr"),
    *_numpy_globals(),                 # mmengine's message hub; numpy weights
]
# What to do with a file that holds something else, by the refused object's package.
EXPORT_HINTS = {
    "pytorch_lightning": "load it where its LightningModule's code is and save "
                         "module.state_dict() with torch.save",
    "lightning": "load it where its LightningModule's code is and save module.state_dict() "
                 "with torch.save",
    "mmengine": "export the weights with the library's tool (e.g. mmpretrain's "
                "tools/model_converters/publish_model.py)",
    "omegaconf": "save checkpoint['state_dict'] alone with torch.save where the training code is",
}
DEFAULT_HINT = ("save the weights alone where the model was trained "
                "(torch.save(model.state_dict(), 'weights.pth')) and pass that file")


def _read_file(path: Path) -> tuple[Any, dict[str, Any]]:
    """The file's contents, read without executing code, with the suite meta when present."""
    existing_file(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(LFS_POINTER):
        raise CheckpointError(f"{path}: a Git LFS pointer ({size} bytes of text), not the "
                              "checkpoint itself: the file was never downloaded. Run 'git lfs "
                              "pull' in its repository, or download the file directly")
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: {size / 2**30:.1f} GiB, larger than any ResNet-18/34/50 "
                              "training checkpoint; save the backbone's state_dict alone")
    if path.suffix == ".safetensors" or head[8:10] == b'{"':
        return _read_safetensors(path)
    if path.suffix in (".pkl", ".pickle"):
        return load_pickle_arrays(path), {}
    try:
        return _load_training_file(path, head), {}
    except CheckpointError:
        if head[:1] != b"\x80":  # a plain pickle (numpy arrays, e.g. a renamed .pkl) gets a try
            raise
        try:
            content = load_pickle_arrays(path)
        except CheckpointError:
            content = None
        if not isinstance(content, dict):
            raise
        return content, {}


def _read_safetensors(path: Path) -> tuple[Any, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_backbone(path)
    except NotWrittenBySuite:
        pass  # a plain safetensors state dict (timm, Hugging Face): no suite metadata
    try:
        return load_file(str(path)), {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(err)})") \
            from err


def _load_training_file(path: Path, head: bytes) -> Any:
    """``torch.load(weights_only=True)`` admitting :data:`TRAINING_FILE_GLOBALS` as well.

    Why torch's reader rather than the suite's restricted ``pickle.Unpickler`` handed to
    ``torch.load(weights_only=False, pickle_module=...)``: torch's weights_only unpickler is a
    separate implementation built as a security boundary (a fixed set of opcodes; every global
    looked up in an allow-list of objects, never imported by name; calls only on admitted
    callables; ``BUILD`` only on admitted types), and it covers all of torch's file formats. With
    ``weights_only=False`` torch's own loader runs instead, whose legacy format reads header
    objects with ``pickle_module.load`` and was never designed to face a hostile file.
    """
    try:
        with torch.serialization.safe_globals(TRAINING_FILE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols, not for users
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_refusal(path, str(err), head)) from err
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError, MemoryError, RecursionError) as err:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint "
                              f"({type(err).__name__}: {_one_line(err)[:160]}; it starts with "
                              f"{head[:16]!r}); the file may be truncated or of another "
                              "format") from err


def _refusal(path: Path, message: str, head: bytes) -> str:
    """One line for a file torch's reader refused: the object it holds and what to do."""
    refused = re.search(r"GLOBAL (\S+) was not an allowed global", message) or \
        re.search(r"unsupported GLOBAL (\S+) whose module", message)
    if refused:
        name = refused.group(1)
        hint = EXPORT_HINTS.get(name.split(".")[0], DEFAULT_HINT)
        return (f"{path}: refused: it holds a '{name}' object, and reading one could run code "
                f"from the file, so only tensors and plain data are read; {hint}")
    inner = re.search(r"WeightsUnpickler error:(.*?)(Check the documentation|$)", message,
                      re.DOTALL)
    reason = _one_line(inner.group(1) if inner else message)[:200]
    if "Unsupported operand" in reason or "Expected" in reason or not inner:
        return (f"{path}: not a readable torch checkpoint ({reason}; it starts with "
                f"{head[:16]!r}); the file may be truncated or of another format")
    return (f"{path}: refused: it holds something other than tensors and plain data ({reason}), "
            f"so it is not read; {DEFAULT_HINT}")


def _one_line(err: BaseException | str) -> str:
    return " ".join(str(err).split())


def _flatten(path: Path, content: dict) -> tuple[dict[tuple[str, str], Any], bool]:
    """{(container path, key): tensor or numeric array} of the tensors in nested dicts, and
    whether containers deeper than :data:`MAX_DEPTH` were left out. Each container is visited
    once (breadth first: a container reached by two paths keeps the shorter), so a file of shared
    or self-referencing dicts costs its size, not the number of paths through it."""
    found: dict[tuple[str, str], Any] = {}
    seen: set[int] = set()
    queue: deque[tuple[dict, str, int]] = deque([(content, "", 0)])
    entries, cut = 0, False
    while queue:
        node, container, depth = queue.popleft()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for key, value in node.items():
            entries += 1
            if entries > MAX_ENTRIES:
                raise CheckpointError(f"{path}: more than {MAX_ENTRIES} entries in its nested "
                                      "dicts; not a checkpoint layout this suite reads")
            if isinstance(value, torch.Tensor) or (isinstance(value, np.ndarray)
                                                   and value.dtype != object):
                found[(container, str(key))] = value
            elif isinstance(value, dict):
                if depth + 1 < MAX_DEPTH:
                    queue.append((value, f"{container}{key}.", depth + 1))
                else:
                    cut = True
    return found, cut


_NUMPY_WEIGHT_KINDS = "fiub"


def _checked_tensor(path: Path, key: str, value: Any) -> torch.Tensor:
    """``value`` (a tensor or numpy array of the backbone) as a dense CPU tensor, refused unless
    it holds finite floating-point numbers (``num_batches_tracked``: integers)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMPY_WEIGHT_KINDS or value.dtype.itemsize > 8:
            raise CheckpointError(f"{path}: '{key}' is a numpy array of dtype {value.dtype}, "
                                  "which no ResNet weight has")
        value = torch.from_numpy(np.array(value, value.dtype.newbyteorder("="), order="C"))
    if value.is_quantized or value.layout != torch.strided or value.is_meta:
        kind = "quantized" if value.is_quantized else "meta (data-less)" if value.is_meta \
            else f"{value.layout}"
        raise CheckpointError(f"{path}: '{key}' is a {kind} tensor; the suite reads dense "
                              "floating-point ResNet weights")
    if key.endswith("num_batches_tracked"):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise CheckpointError(f"{path}: '{key}' holds {value.dtype} values, not a count")
        return value
    if not value.is_floating_point():
        raise CheckpointError(f"{path}: '{key}' holds {value.dtype} values; ResNet weights and "
                              "BN statistics are floating point")
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        raise CheckpointError(f"{path}: '{key}' holds {bad} NaN or infinite value(s); the "
                              "training that wrote it diverged, so it is not a usable backbone")
    return value


# ------------------------------------------------------------------------------------ naming
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


def _candidates(tensors: dict[tuple[str, str], Any]) -> list[tuple[str, str, str]]:
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
                         ("backbone.", "solo-learn/mmpretrain/lightly"),
                         ("module.", "torchvision (DataParallel)")):
        if where.endswith(marker):
            return name
    return "torchvision/timm" if prefix == "" else f"prefix {prefix!r}"


# ------------------------------------------------------------------------------------ which copy
def _role(where: str) -> str:
    """What a copy's key path says it is: ema, teacher, student, momentum, online or plain."""
    lowered = where.lower()
    tokens = set(re.split(r"[._]", lowered))
    if "ema" in tokens:
        return "ema"
    for role, marks in (("teacher", ("teacher",)), ("student", ("student",)),
                        ("momentum", ("momentum", "target", "encoder_k", "key_encoder")),
                        ("online", ("online", "encoder_q", "base_encoder", "query"))):
        if any(m in tokens or ("_" in m and m in lowered) for m in marks):
            return role
    return "plain"


def _method_evidence(tensors: dict[tuple[str, str], Any], container: str) -> tuple[str, str]:
    """(family, the key that shows it) from the heads beside the copies: self-distillation (a
    DINO head), online (a BYOL/SimSiam predictor, a MoCo queue), or ("", "") when the keys show
    none or both."""
    found: dict[str, str] = {}
    for c, key in tensors:
        if c != container:
            continue
        parts = set(key.split("."))
        if DINO_HEAD.search(key):
            found.setdefault("self-distillation", key)
        elif parts & PREDICTOR or parts & MOCO_QUEUE:
            found.setdefault("online", key)
    return next(iter(found.items())) if len(found) == 1 else ("", "")


def _choose(path: Path, tensors: dict[tuple[str, str], Any], prefix: str | None,
            deep: str) -> tuple[str, str, str, str]:
    """(container, prefix, naming, the rule that chose it) of the backbone to read."""
    keys = [c + k for c, k in tensors]
    if any(CAFFE2_KEY.match(k) for _, k in tensors):
        raise CheckpointError(
            f"{path}: Caffe2/Detectron-style names (e.g. res2_0_branch2a_w): such weights expect "
            "BGR input and stride in the 1x1 conv, so they are not a torchvision ResNet. Use them "
            "with detectron2's own MSRA configs directly; the suite reads torchvision-style "
            "ResNets")
    candidates = _candidates(tensors)
    found = ", ".join(repr(c[0] + c[1]) for c in candidates) or "none"
    if prefix is not None:
        named = [c for c in candidates if c[0] + c[1] == prefix] or \
            [c for c in candidates if c[1] == prefix]
        if not named:
            raise CheckpointError(
                f"{path}: no ResNet keys under --prefix {prefix!r} (no '{prefix}layer1.0.conv1."
                f"weight' or equivalent). ResNets found under: {found}; first keys: "
                f"{preview(keys)}")
        if len(named) > 1:
            raise CheckpointError(f"{path}: --prefix {prefix!r} matches several ResNets: "
                                  f"{', '.join(repr(c[0] + c[1]) for c in named)}; give the "
                                  "whole path")
        return (*named[0], f"{named[0][0] + named[0][1]!r}, chosen by --prefix")
    if not candidates:
        raise CheckpointError(
            f"{path}: no ResNet backbone found (no 'layer1.0.conv1.weight', 'res2.0.conv1.weight' "
            f"or '4.0.conv1.weight' under any prefix){deep}. Keys: {preview(keys)}"
            + (" - only a classifier head?" if keys and all(".fc." in f".{k}" for k in keys)
               else ""))
    chosen, rule = _pick(path, tensors, candidates)
    return (*chosen, rule)


def _pick(path: Path, tensors: dict[tuple[str, str], Any],
          candidates: list[tuple[str, str, str]]) -> tuple[tuple[str, str, str], str]:
    """The copy a known rule selects (see the module docstring), and the rule in words."""
    name = {c: repr(c[0] + c[1]) if c[0] + c[1] else "the top-level keys" for c in candidates}
    ema = [c for c in candidates if _role(c[0] + c[1]) == "ema"]
    kept = [c for c in candidates if c not in ema]
    ignored = f"; EMA copy {', '.join(name[c] for c in ema)} not used (--prefix chooses it)" \
        if ema else ""
    if not kept:
        raise CheckpointError(f"{path}: its only ResNet is the EMA copy {name[ema[0]]}, which "
                              "is read only when asked: pass --prefix " + name[ema[0]])
    if len(kept) == 1:
        return kept[0], f"{name[kept[0]]}, the only copy{ignored}"
    roles = {_role(c[0] + c[1]): c for c in kept}
    if len(kept) == 2 and set(roles) == {"teacher", "student"}:
        return roles["teacher"], (f"the teacher {name[roles['teacher']]} (self-distillation: "
                                  f"DINO evaluates the teacher; the student "
                                  f"{name[roles['student']]} is not used){ignored}")
    online = roles.get("online") or roles.get("plain")
    if len(kept) == 2 and "momentum" in roles and online:
        family, key = _method_evidence(tensors, online[0])
        named_online = "online" in roles
        momentum = roles["momentum"]
        if family == "self-distillation" and not named_online:
            return momentum, (f"the momentum copy {name[momentum]}, the teacher (the file "
                              f"has a DINO head, '{key}': self-distillation evaluates the "
                              f"teacher; the student {name[online]} is not used){ignored}")
        if named_online and family != "self-distillation" or family == "online":
            why = f"its head '{key}'" if family else "the names"
            return online, (f"the online encoder {name[online]} (MoCo/BYOL/SimSiam evaluate "
                            f"it, shown by {why}; the momentum copy {name[momentum]} is not "
                            f"used){ignored}")
        raise CheckpointError(
            f"{path}: two copies of the ResNet, {name[online]} and {name[momentum]}, and the "
            "file does not show which method trained it: MoCo and BYOL evaluate the online one, "
            "DINO-style self-distillation the momentum teacher. Pick one with --prefix")
    raise CheckpointError(
        f"{path}: several ResNets in one file, under {', '.join(name[c] for c in kept)}, and no "
        "known rule says which one is evaluated; pick one with --prefix (the part of the key "
        f"before 'conv1.weight'){ignored}")


# ------------------------------------------------------------------------------------ stride
STRIDE_CONVENTIONS = (
    "detectron2's default (MODEL.RESNETS.STRIDE_IN_1X1 True, MSRA/Caffe2 style, mmcv's "
    "style='caffe') puts each stage's stride 2 in the first 1x1 conv of its first bottleneck; "
    "torchvision (and MoCo-converted files, STRIDE_IN_1X1 False) puts it in the 3x3 conv; the "
    "weights have the same shapes either way but give different features")


def _stride_convention(path: Path, content: dict, suite_meta: dict[str, Any], naming: str,
                       arch: str, where: str, flag: bool | None) -> tuple[bool, str]:
    """(stride_in_1x1, where that was read) of the network in ``path``; see the module doc."""
    if not RESNETS[arch].bottleneck:
        if flag:
            raise CheckpointError(f"--stride-in-1x1 true: {path} holds a {arch}, whose basic "
                                  "blocks have their stride in a 3x3 conv in every convention; "
                                  "the flag is for bottleneck ResNets (resnet50)")
        return False, "basic blocks: one convention"
    declared, source = _declared_stride(path, content, suite_meta, naming)
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
    return False, "torchvision names: torchvision's convention"


def _declared_stride(path: Path, content: dict, suite_meta: dict[str, Any],
                     naming: str) -> tuple[bool | None, str]:
    """The convention the file (or, for detectron2 names, the config beside it) declares."""
    if "stride_in_1x1" in suite_meta:
        if not isinstance(suite_meta["stride_in_1x1"], bool):
            raise CheckpointError(f"{path}: its {META_KEY} has stride_in_1x1="
                                  f"{suite_meta['stride_in_1x1']!r}, not true or false")
        return suite_meta["stride_in_1x1"], f"its {META_KEY}"
    if naming != "detectron2":
        return None, ""
    author = content.get("__author__")
    if isinstance(author, str) and author in TORCHVISION_CONVERTERS \
            and content.get("matching_heuristics") is True:
        return False, (f"__author__ {author!r}: {TORCHVISION_CONVERTERS[author]} from a "
                       "torchvision ResNet")
    return _stride_from_config_beside(path)


def _embedded_suite_meta(path: Path, content: dict) -> dict[str, Any]:
    """The suite meta a file written by transfer/convert.py carries (detectron2: top level;
    mmpose: under ``meta``), checked: one line for one that is not a JSON object."""
    raw = content.get(META_KEY)
    if raw is None and isinstance(content.get("meta"), dict):
        raw = content["meta"].get(META_KEY)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw) if isinstance(raw, (str, bytes)) else None
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: its '{META_KEY}' metadata is not valid JSON "
                              f"({_one_line(err)}); the file was edited or damaged, convert it "
                              "again") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its '{META_KEY}' metadata is not a JSON object; the "
                              "file was edited or damaged, convert it again")
    return meta


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


def parse_bool(value: str) -> bool:
    """``true``/``false`` (any case) for a command-line flag."""
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{value!r}: expected true or false")
    return lowered == "true"
