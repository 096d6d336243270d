"""Writing a backbone in an engine's format, verified by that engine.

    python transfer/convert.py SRC --to detectron2|mmpose --out FILE [--prefix P] [--no-verify]

The source is opened by :func:`pretrain.open_backbone.open_backbone` (the suite's checkpoint, a
ResNet trained elsewhere in any format :mod:`pretrain.foreign` reads, or ``random``), then written
(:func:`export_backbone`):

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

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transfer.compat  # noqa: F401,I001  (shims; before any detectron2 or mmpose import)

from pretrain.backbones import RESNETS, STAGES, stage_outputs
from pretrain.checkpoint import CheckpointError, atomic_write, load_pickle_arrays
from pretrain.cli import run_main
from pretrain.foreign import preview
from pretrain.open_backbone import Backbone, open_backbone

TARGETS = ("detectron2", "mmpose")
DETECTRON2_AUTHOR = "ssl-transfer-suite transfer/convert.py"
# torchvision mean/std on detectron2's 0-255 pixel scale, RGB (MoCo's detection protocol)
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]
FEATURE_RTOL = 1e-4  # max |difference| / max |source feature|, per stage


class ConversionError(CheckpointError):
    """A backbone that cannot be written for an engine completely and exactly; says why."""


# ------------------------------------------------------------------------------------ writing
def detectron2_name(key: str) -> str:
    """MoCo's renaming of a torchvision ResNet key into detectron2's ResNet names."""
    if not key.startswith("layer"):
        key = "stem." + key
    key = re.sub(r"layer([1-4])", lambda m: f"res{int(m.group(1)) + 1}", key)
    key = re.sub(r"bn([1-3])", r"conv\1.norm", key)
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def _detectron2_bytes(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    model = {detectron2_name(k): v.numpy() for k, v in state.items()
             if not k.endswith("num_batches_tracked")}
    return pickle.dumps({"model": model, "__author__": DETECTRON2_AUTHOR,
                         "matching_heuristics": True, "suite_meta": json.dumps(meta)}, protocol=4)


def _mmpose_bytes(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "meta": {"suite_meta": json.dumps(meta)}}, buffer)
    return buffer.getvalue()


def export_backbone(backbone: Backbone, to: str, out: str | os.PathLike,
                    verify: bool = True) -> Path:
    """Write ``backbone`` (opened by :func:`~pretrain.open_backbone.open_backbone`) for ``to``
    (detectron2 or mmpose) into ``out``, verified unless ``verify=False``. On any failure nothing
    new is left at ``out`` (an older file stays)."""
    if to not in TARGETS:
        raise ValueError(f"unknown target {to!r}; choose one of {', '.join(TARGETS)}")
    if backbone.meta["stem"] == "small":
        raise ConversionError(
            f"{backbone.origin}: a small-image stem (3x3 stride-1 conv1, no max-pool; "
            f"CIFAR-style). {to}'s ResNet has only the ImageNet stem (7x7 stride-2 conv1 + "
            "max-pool), so these weights cannot be loaded as they are. Pre-train with '--stem "
            f"imagenet' for transfer to {to}")
    out = Path(out)
    state = backbone.model.state_dict()
    payload = (_detectron2_bytes if to == "detectron2" else _mmpose_bytes)(
        state, {**backbone.meta, "source_file": backbone.origin})
    # Keep the suffix: detectron2 chooses its reader by it (.pkl -> pickle).
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.unverified{out.suffix}")
    try:
        atomic_write(tmp, lambda f: f.write(payload))
        if verify:
            (verify_detectron2 if to == "detectron2" else verify_mmpose)(tmp, backbone)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------------ verifying
def _fixed_input() -> torch.Tensor:
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))


def _source_features(backbone: Backbone) -> dict[str, torch.Tensor]:
    model = backbone.model
    training = model.training
    try:
        with torch.no_grad():
            return stage_outputs(model.eval(), _fixed_input())
    finally:
        model.train(training)


def _compare(path: Path, engine: str, loaded: dict[str, torch.Tensor],
             expected: dict[str, torch.Tensor], features: dict[str, torch.Tensor],
             reference: dict[str, torch.Tensor]) -> None:
    """Fail unless every expected tensor was loaded exactly and every stage output matches."""
    not_loaded = [k for k, v in expected.items()
                  if k not in loaded or loaded[k].shape != v.shape or not torch.equal(loaded[k], v)]
    if not_loaded:
        raise ConversionError(f"{path}: {engine} did not load {len(not_loaded)} backbone "
                              f"tensor(s) as written: {preview(not_loaded, 12)}")
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
    cfg.MODEL.RESNETS.DEPTH = RESNETS[arch].depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = RESNETS[arch].res2_channels
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "SyncBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = list(PIXEL_MEAN), list(PIXEL_STD)
    cfg.INPUT.FORMAT = "RGB"
    return cfg


def verify_detectron2(path: str | os.PathLike, backbone: Backbone) -> None:
    """Load ``path`` into detectron2's ResNet the way its DetectionCheckpointer does and compare
    tensors and res2..res5 with ``backbone``'s torchvision model."""
    path = Path(path)
    data = load_pickle_arrays(path)  # proves the file is arrays-only before detectron2 unpickles
    if not (isinstance(data, dict) and isinstance(data.get("model"), dict)
            and "__author__" in data and data.get("matching_heuristics") is True):
        raise ConversionError(f"{path}: not a detectron2 weights file with 'model', "
                              "'__author__' and matching_heuristics=True")
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = detectron2_resnet_cfg(backbone.meta["arch"])
    engine_resnet = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    checkpointer = DetectionCheckpointer(engine_resnet)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
    missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or incompatible.unexpected_keys or incompatible.incorrect_shapes:
        raise ConversionError(
            f"{path}: detectron2 loaded it partially: missing {preview(missing)}; unexpected "
            f"{preview(incompatible.unexpected_keys)}; wrong shapes "
            f"{preview([str(s) for s in incompatible.incorrect_shapes])}")
    expected = {detectron2_name(k): v for k, v in backbone.model.state_dict().items()
                if not k.endswith("num_batches_tracked")}
    with torch.no_grad():
        features = engine_resnet.eval()(_fixed_input())
    _compare(path, "detectron2", engine_resnet.state_dict(), expected, features,
             _source_features(backbone))


def verify_mmpose(path: str | os.PathLike, backbone: Backbone) -> None:
    """Build mmpose's ResNet with ``init_cfg=dict(type='Pretrained', checkpoint=path)``, run its
    weight init (what mmpose's Runner does) and compare tensors and the four stage outputs with
    ``backbone``'s."""
    path = Path(path)
    from mmengine.logging import MMLogger
    from mmpose.models.backbones import ResNet

    engine_resnet = ResNet(depth=RESNETS[backbone.meta["arch"]].depth, out_indices=(0, 1, 2, 3),
                           init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every tensor's init at INFO
    try:
        engine_resnet.init_weights()
    finally:
        logger.setLevel(level)
    engine_resnet.eval()  # mmpose's ResNet.train() returns None, so no chaining
    with torch.no_grad():
        features = dict(zip(STAGES, engine_resnet(_fixed_input())))
    loaded, state = engine_resnet.state_dict(), backbone.model.state_dict()
    unexpected = sorted(set(loaded) - set(state))
    if unexpected:
        raise ConversionError(f"{path}: mmpose's ResNet has tensors the source lacks: "
                              f"{preview(unexpected)}")
    _compare(path, "mmpose", loaded, state, features, _source_features(backbone))


# ------------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python transfer/convert.py", description=__doc__.split("\n\n")[0],
        epilog="Reads the suite's backbone checkpoint or a torchvision/timm/MoCo/solo-learn/"
               "mmselfsup/VISSL/lightly/detectron2 ResNet; see pretrain/foreign.py.")
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

    def convert() -> None:
        start = time.perf_counter()
        backbone = open_backbone(args.src, prefix=args.prefix)
        out = export_backbone(backbone, args.to, args.out, verify=not args.no_verify)
        meta = backbone.meta
        verified = "verified" if not args.no_verify else "NOT verified (--no-verify)"
        print(f"{out}: {meta['arch']} from {meta.get('source_format', 'random')} "
              f"(prefix {meta.get('source_prefix', '')!r}), {verified}, "
              f"{time.perf_counter() - start:.1f} s")

    return run_main(convert)


if __name__ == "__main__":
    sys.exit(main())
