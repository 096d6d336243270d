"""Backbone converters that verify themselves.

    python transfer/convert.py SRC --to detectron2|mmpose --out FILE [--prefix P] [--no-verify]

Reading (:func:`load_any_backbone`). The source may be the suite's backbone checkpoint or a
ResNet trained elsewhere. Nested containers are flattened (``state_dict``, ``model``, VISSL's
``classy_state_dict.base_model.model.trunk``, ...) and the backbone is found by its keys, under
any prefix, in one of three namings:

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
:class:`ConversionError` lists the unmapped, missing and mis-shaped keys. Files are read without
executing code: safetensors, ``torch.load(weights_only=True)``, or for ``.pkl`` an unpickler that
admits only numpy arrays and plain containers (:mod:`pretrain.checkpoint`). Caffe2-named weights
(detectron2's ImageNetPretrained/MSRA: BGR input, stride in the 1x1 conv) are refused.

Writing (:func:`convert_checkpoint`):

- detectron2: a pickle (protocol 4) of ``{"model": {name: numpy array}, "__author__": ...,
  "matching_heuristics": True, "suite_meta": json}`` with MoCo's renaming (``layerN`` ->
  ``res{N+1}``, ``bnK`` -> ``convK.norm``, ``downsample.0/1`` -> ``shortcut(.norm)``, stem keys
  under ``stem.``). ``__author__`` matters: without it detectron2 takes the file for Caffe2 and
  renames every key a second time. ``num_batches_tracked`` is left out (detectron2 ignores it).
- mmpose: ``torch.save({"state_dict": torchvision keys without fc, "meta": {...}})``, which
  ``init_cfg=dict(type='Pretrained', checkpoint=FILE)`` loads without a ``prefix``.

The file is written (atomically) to a hidden temporary name beside ``--out`` and verified there:
the engine's own ResNet is built (detectron2 ``build_resnet_backbone`` with MoCo's detection
settings, or mmpose ``ResNet`` with a ``Pretrained`` init_cfg), the file is loaded the way the
engine loads it, every tensor is compared with the source, and res2..res5 on a fixed input are
compared with the source torchvision model. Only then is it renamed to ``--out``; on any failure
the temporary file is removed and an existing ``--out`` is left untouched. A small-image stem
(3x3 conv1, no max-pool) is refused for both engines: their ResNets have only the ImageNet stem.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import pickle
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transfer.compat  # noqa: F401,I001  (shims; before any detectron2 or mmpose import)

from pretrain.backbones import STAGES, arch_of, build_resnet, stage_outputs, stem_of
from pretrain.checkpoint import (
    META_KEY,
    CheckpointError,
    atomic_write,
    load_backbone,
    load_pickle_arrays,
    load_torch,
)

TARGETS = ("detectron2", "mmpose")
DETECTRON2_AUTHOR = "ssl-transfer-suite transfer/convert.py"
# torchvision mean/std on detectron2's 0-255 pixel scale, RGB (MoCo's detection protocol)
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]
FEATURE_RTOL = 1e-4  # max |difference| / max |source feature|, per stage
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


class ConversionError(CheckpointError):
    """A checkpoint that cannot be converted completely and exactly; the message says why."""


# ------------------------------------------------------------------------------------ reading
def _read_file(path: Path) -> Any:
    """The file's contents, read without executing code, with the suite meta when present."""
    if not path.is_file() or path.stat().st_size == 0:
        raise ConversionError(f"{path}: no such checkpoint file" if not path.is_file() else
                              f"{path}: empty file (an interrupted download or copy?)")
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
            raise ConversionError(f"{path}: not a readable safetensors file ({err})") from err
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
        raise ConversionError(
            f"{path}: Caffe2/Detectron-style names (e.g. res2_0_branch2a_w): such weights expect "
            "BGR input and stride in the 1x1 conv, so they are not a torchvision ResNet. Use them "
            "with detectron2's own MSRA configs directly; this converter takes torchvision-style "
            "ResNets")
    candidates = _candidates(tensors)
    if prefix is not None:
        candidates = [c for c in candidates if c[1] == prefix]
        if not candidates:
            found = sorted({c[1] for c in _candidates(tensors)})
            raise ConversionError(
                f"{path}: no ResNet keys under --prefix {prefix!r} (no '{prefix}layer1.0.conv1."
                f"weight' or equivalent). ResNets found under: "
                f"{', '.join(repr(p) for p in found) or 'none'}; first keys: {_some(keys)}")
    chosen = [c for c in candidates
              if not any(m in (c[0] + c[1]).lower() for m in SECOND_COPY)] or candidates
    if not chosen:
        raise ConversionError(
            f"{path}: no ResNet backbone found (no 'layer1.0.conv1.weight', 'res2.0.conv1.weight' "
            f"or '4.0.conv1.weight' under any prefix). Keys: {_some(keys)}"
            + (" - only a classifier head?" if keys and all(".fc." in f".{k}" for k in keys)
               else ""))
    if len(chosen) > 1:
        raise ConversionError(
            f"{path}: several ResNets in one file, under "
            f"{', '.join(repr(c[0] + c[1]) for c in chosen)}; pick one with --prefix "
            "(the part of the key before 'conv1.weight')")
    return chosen[0]


def _some(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_any_backbone(path: str | os.PathLike, prefix: str | None = None
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A torchvision-keyed ResNet state_dict (no ``fc.*``, float32) and its meta, from any
    supported checkpoint. meta: ``arch``, ``stem``, ``source_format``, ``source_prefix`` and the
    suite's own meta (method, regularizer, data, epochs, ...) when the file has it."""
    path = Path(path)
    content, suite_meta = _read_file(path)
    tensors = _flatten(content)
    if not tensors:
        raise ConversionError(f"{path}: holds no tensors (a {type(content).__name__}); expected "
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
        raise ConversionError(
            f"{path}: {len(unmapped)} key(s) under {container + chosen_prefix!r} do not map to a "
            f"torchvision ResNet: {_some(unmapped, 12)}. (A deep stem, 'conv1.0', is a ResNet-D/"
            "v1c, not supported; a different head prefix can be chosen with --prefix.)")
    try:
        arch, stem = arch_of(state), stem_of(state)
    except (KeyError, ValueError) as err:
        raise ConversionError(f"{path}: not a ResNet-18/34/50 under {container + chosen_prefix!r}"
                              f": {err}") from err
    template = build_resnet(arch, stem).state_dict()
    for key, value in template.items():  # absent in some older checkpoints; never used in eval
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = sorted(set(template) - set(state))
    extra = sorted(set(state) - set(template))
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
              for k, v in template.items() if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        raise ConversionError(
            f"{path}: incomplete {arch} ({stem} stem) under {container + chosen_prefix!r}: "
            f"missing {len(missing)}: {_some(missing, 12)}; unexpected {len(extra)}: "
            f"{_some(extra, 12)}; wrong shape {len(shapes)}: {_some(shapes, 6)}")
    state = {k: state[k].to(template[k].dtype).contiguous() for k in template}
    meta = {**suite_meta, "arch": arch, "stem": stem,
            "source_format": "suite" if suite_meta else _source_format(container, chosen_prefix,
                                                                       naming),
            "source_prefix": container + chosen_prefix}
    return state, meta


# ------------------------------------------------------------------------------------ writing
def detectron2_name(key: str) -> str:
    """MoCo's renaming of a torchvision ResNet key into detectron2's ResNet names."""
    if not key.startswith("layer"):
        key = "stem." + key
    key = re.sub(r"layer([1-4])", lambda m: f"res{int(m.group(1)) + 1}", key)
    key = re.sub(r"bn([1-3])", r"conv\1.norm", key)
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def _refuse_small_stem(state: dict[str, torch.Tensor], to: str, src: Path) -> None:
    if stem_of(state) == "small":
        raise ConversionError(
            f"{src}: a small-image stem (3x3 stride-1 conv1, no max-pool; CIFAR-style). {to}'s "
            "ResNet has only the ImageNet stem (7x7 stride-2 conv1 + max-pool), so these weights "
            "cannot be loaded as they are. Pre-train with '--stem imagenet' for transfer to "
            f"{to}")


def _detectron2_bytes(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    model = {detectron2_name(k): v.numpy() for k, v in state.items()
             if not k.endswith("num_batches_tracked")}
    return pickle.dumps({"model": model, "__author__": DETECTRON2_AUTHOR,
                         "matching_heuristics": True, "suite_meta": json.dumps(meta)}, protocol=4)


def _mmpose_bytes(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "meta": {"suite_meta": json.dumps(meta)}}, buffer)
    return buffer.getvalue()


def convert_checkpoint(src: str | os.PathLike, to: str, out: str | os.PathLike,
                       prefix: str | None = None, verify: bool = True) -> Path:
    """Convert ``src`` for ``to`` (detectron2 or mmpose) into ``out``, verified unless
    ``verify=False``. On any failure nothing new is left at ``out`` (an older file stays)."""
    if to not in TARGETS:
        raise ValueError(f"unknown target {to!r}; choose one of {', '.join(TARGETS)}")
    src, out = Path(src), Path(out)
    state, meta = load_any_backbone(src, prefix)
    _refuse_small_stem(state, to, src)
    payload = (_detectron2_bytes if to == "detectron2" else _mmpose_bytes)(
        state, {**meta, "source_file": str(src)})
    # Keep the suffix: detectron2 chooses its reader by it (.pkl -> pickle).
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.unverified{out.suffix}")
    try:
        atomic_write(tmp, lambda f: f.write(payload))
        if verify:
            (verify_detectron2 if to == "detectron2" else verify_mmpose)(tmp, state)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------------ verifying
def _fixed_input() -> torch.Tensor:
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))


def _source_features(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = build_resnet(arch_of(state), stem_of(state))
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return stage_outputs(model.eval(), _fixed_input())


def _compare(path: Path, engine: str, loaded: dict[str, torch.Tensor],
             expected: dict[str, torch.Tensor], features: dict[str, torch.Tensor],
             reference: dict[str, torch.Tensor]) -> None:
    """Fail unless every expected tensor was loaded exactly and every stage output matches."""
    not_loaded = [k for k, v in expected.items()
                  if k not in loaded or loaded[k].shape != v.shape or not torch.equal(loaded[k], v)]
    if not_loaded:
        raise ConversionError(f"{path}: {engine} did not load {len(not_loaded)} backbone "
                              f"tensor(s) as written: {_some(not_loaded, 12)}")
    errors = {}
    for stage in STAGES:
        got, ref = features[stage], reference[stage]
        if got.shape != ref.shape:
            raise ConversionError(f"{path}: {engine} {stage} has shape {tuple(got.shape)}, the "
                                  f"source model {tuple(ref.shape)}")
        errors[stage] = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    bad = {s: e for s, e in errors.items() if not e <= FEATURE_RTOL}
    if bad:
        raise ConversionError(f"{path}: {engine} features differ from the source model beyond "
                              f"tolerance {FEATURE_RTOL} (relative max error per stage: {bad})")


def detectron2_resnet_cfg(arch: str) -> Any:
    """detectron2 cfg for a torchvision-style ResNet under MoCo's detection protocol."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    depth = int(arch.removeprefix("resnet"))
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth in (18, 34) else 256
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "SyncBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = list(PIXEL_MEAN), list(PIXEL_STD)
    cfg.INPUT.FORMAT = "RGB"
    return cfg


def verify_detectron2(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> None:
    """Load ``path`` into detectron2's ResNet the way its DetectionCheckpointer does and compare
    tensors and res2..res5 with the torchvision model of ``state``."""
    path = Path(path)
    data = load_pickle_arrays(path)  # proves the file is arrays-only before detectron2 unpickles
    if not (isinstance(data, dict) and isinstance(data.get("model"), dict)
            and "__author__" in data and data.get("matching_heuristics") is True):
        raise ConversionError(f"{path}: not a detectron2 weights file with 'model', "
                              "'__author__' and matching_heuristics=True")
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = detectron2_resnet_cfg(arch_of(state))
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    checkpointer = DetectionCheckpointer(backbone)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
    missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or incompatible.unexpected_keys or incompatible.incorrect_shapes:
        raise ConversionError(
            f"{path}: detectron2 loaded it partially: missing {_some(missing)}; unexpected "
            f"{_some(incompatible.unexpected_keys)}; wrong shapes "
            f"{_some([str(s) for s in incompatible.incorrect_shapes])}")
    expected = {detectron2_name(k): v for k, v in state.items()
                if not k.endswith("num_batches_tracked")}
    with torch.no_grad():
        features = backbone.eval()(_fixed_input())
    _compare(path, "detectron2", backbone.state_dict(), expected, features,
             _source_features(state))


def verify_mmpose(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> None:
    """Build mmpose's ResNet with ``init_cfg=dict(type='Pretrained', checkpoint=path)``, run its
    weight init (what mmpose's Runner does) and compare tensors and the four stage outputs."""
    path = Path(path)
    from mmengine.logging import MMLogger
    from mmpose.models.backbones import ResNet

    depth = int(arch_of(state).removeprefix("resnet"))
    backbone = ResNet(depth=depth, out_indices=(0, 1, 2, 3),
                      init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every tensor's init at INFO
    try:
        backbone.init_weights()
    finally:
        logger.setLevel(level)
    backbone.eval()  # mmpose's ResNet.train() returns None, so no chaining
    with torch.no_grad():
        features = dict(zip(STAGES, backbone(_fixed_input())))
    loaded = backbone.state_dict()
    unexpected = sorted(set(loaded) - set(state))
    if unexpected:
        raise ConversionError(f"{path}: mmpose's ResNet has tensors the source lacks: "
                              f"{_some(unexpected)}")
    _compare(path, "mmpose", loaded, state, features, _source_features(state))


# ------------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python transfer/convert.py", description=__doc__.split("\n\n")[0],
        epilog="Reads the suite's backbone checkpoint or a torchvision/timm/MoCo/solo-learn/"
               "mmselfsup/VISSL/lightly/detectron2 ResNet; see the module docstring.")
    parser.add_argument("src", help="backbone checkpoint to convert")
    parser.add_argument("--to", required=True, choices=TARGETS, help="target engine")
    parser.add_argument("--out", required=True,
                        help="output file (detectron2: .pkl; mmpose: .pth); written only if it "
                             "verifies")
    parser.add_argument("--prefix", default=None,
                        help="key prefix of the backbone inside the file, e.g. 'module.encoder_q.'"
                             " (default: detected)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip loading the result into the engine (for machines without it)")
    args = parser.parse_args(argv)
    if args.to == "detectron2" and not args.out.endswith(".pkl"):
        parser.error("--out must end with .pkl for detectron2 (detectron2 reads .pkl files with "
                     "its model-zoo format rules and anything else as a torch checkpoint)")
    start = time.perf_counter()
    try:
        _, meta = load_any_backbone(args.src, args.prefix)
        out = convert_checkpoint(args.src, args.to, args.out, args.prefix,
                                 verify=not args.no_verify)
    except (CheckpointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    verified = "verified" if not args.no_verify else "NOT verified (--no-verify)"
    print(f"{out}: {meta['arch']} from {meta['source_format']} "
          f"(prefix {meta['source_prefix']!r}), {verified}, "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
