"""Writing a backbone in an engine's format, verified by that engine.

    ssl-convert SRC --to detectron2|mmpose --out FILE [--prefix P] [--stride-in-1x1 true|false]
                [--no-verify]        (or: python -m transfer.convert ...)

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

A bottleneck ResNet trained with its stride in the 1x1 conv (``meta["stride_in_1x1"]``, read by
:mod:`pretrain.foreign` or given with ``--stride-in-1x1``) is written as such: the detectron2 file
records ``stride_in_1x1`` in its ``suite_meta`` (``transfer/coco_det.py`` sets
``MODEL.RESNETS.STRIDE_IN_1X1`` from it; by hand, set it in your config), the mmpose file records
``style='caffe'`` in its ``meta`` (``transfer/mpii_pose.py`` builds its ResNet so).

The file is written (atomically) to a hidden temporary name beside ``--out`` and verified there:
the engine's own ResNet is built the way the file says (detectron2 ``build_resnet_backbone`` with
MoCo's detection settings and the recorded ``STRIDE_IN_1X1``, or mmpose ``ResNet`` with the
recorded style and a ``Pretrained`` init_cfg), the file is loaded the way the engine loads it,
every tensor is compared with the source, and res2..res5 on a fixed input are compared with the
**source network as its library builds it**: built from the file's own tensors under their own
names in the source's library layout (detectron2's ResNet for detectron2 names, lightly's
``nn.Sequential``, a torchvision ResNet), with the stem geometry and stride convention the file
states (:mod:`pretrain.foreign` reads them from its names, meta and config, checks every claim the
file makes against its tensors, and refuses what it cannot establish), not rebuilt from the
converted weights. A source network whose own features are not finite is refused as broken.
The suite's own torchvision model (what the probes use) is held to the same source network. Only
then is the file renamed to ``--out``; on any failure the temporary file is removed and an
existing ``--out`` is left untouched. A small-image stem (3x3 conv1, no max-pool) is refused for
both engines: their ResNets have only the ImageNet stem.
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

import transfer.compat  # noqa: F401,I001  (shims; before any detectron2 or mmpose import)
from pretrain.backbones import READ_STEMS, RESNETS, STAGES, stage_outputs
from pretrain.checkpoint import META_KEY, CheckpointError, load_pickle_arrays
from pretrain.cli import run_main
from pretrain.files import atomic_write
from pretrain.foreign import parse_bool, preview, resnet_skeleton
from pretrain.open_backbone import Backbone, move_stride_to_1x1, open_backbone

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
    torch.save({"state_dict": state, "meta": {META_KEY: json.dumps(meta),
                                              "style": mmpose_style(meta)}}, buffer)
    return buffer.getvalue()


def mmpose_style(meta: dict[str, Any]) -> str:
    """mmpose's (mmcv's) ResNet ``style`` of a backbone: 'caffe' puts the stride in the 1x1."""
    return "caffe" if meta.get("stride_in_1x1") else "pytorch"


def export_backbone(backbone: Backbone, to: str, out: str | os.PathLike, verify: bool = True,
                    differences: dict[str, float] | None = None,
                    engine_cfg: Any = None) -> Path:
    """Write ``backbone`` (opened by :func:`~pretrain.open_backbone.open_backbone`) for ``to``
    (detectron2 or mmpose) into ``out``, verified unless ``verify=False``; ``differences``, when
    given, receives the max abs difference of each stage from the source network. ``engine_cfg``
    (detectron2): the run's resolved config, whose ``MODEL.RESNETS`` builds the ResNet that
    verifies (default: MoCo's protocol in the convention the file records). On any failure
    nothing new is left at ``out`` (an older file stays)."""
    if to not in TARGETS:
        raise ValueError(f"unknown target {to!r}; choose one of {', '.join(TARGETS)}")
    if backbone.meta["stem"] != "imagenet":
        raise ConversionError(
            f"{backbone.origin}: a small-image stem ({backbone.meta['stem']}: 3x3 stride-1 "
            f"conv1, no max-pool; CIFAR-style). {to}'s ResNet has only the ImageNet stem (7x7 "
            "stride-2 conv1 + max-pool), so these weights cannot be loaded as they are. "
            f"Pre-train with '--stem imagenet' for transfer to {to}")
    out = Path(out)
    state = backbone.model.state_dict()
    payload = (_detectron2_bytes if to == "detectron2" else _mmpose_bytes)(
        state, {**backbone.meta, "source_file": backbone.origin})
    # Keep the suffix: detectron2 chooses its reader by it (.pkl -> pickle).
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.unverified{out.suffix}")
    try:
        atomic_write(tmp, lambda f: f.write(payload))
        if verify:
            found = (verify_detectron2(tmp, backbone, engine_cfg) if to == "detectron2"
                     else verify_mmpose(tmp, backbone))
            if differences is not None:
                differences.update(found)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------------ verifying
def _fixed_input() -> torch.Tensor:
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))


def source_features(backbone: Backbone, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """res2..res5 of the source network as it was trained: built from the file's own tensors
    under their own names, in its library's layout (detectron2's ResNet, lightly's
    ``nn.Sequential``, a torchvision ResNet) and stride convention. The random-init control is
    its own source."""
    source, meta = backbone.source, backbone.meta
    if source is None:
        return _eval_stages(backbone.model, images)
    if source.naming == "detectron2":
        try:
            with torch.device("meta"):  # every tensor is loaded: skip the random init
                network = _detectron2_resnet(meta["arch"], meta["stride_in_1x1"], norm="BN")
        except ImportError:  # mmpose only here: the suite's model, built in the same convention
            return _eval_stages(backbone.model, images)
        network = network.to_empty(device="cpu")
        _load_source(backbone, network)
        with torch.no_grad():
            return network.eval()(images)
    model = resnet_skeleton(meta["arch"], meta["stem"]).to_empty(device="cpu")
    for name, buffer in model.named_buffers():  # frozen BN has none to load
        if name.endswith("num_batches_tracked"):
            buffer.zero_()
    if meta["stride_in_1x1"]:
        move_stride_to_1x1(model)
    if source.naming == "sequential":  # lightly: nn.Sequential(*list(resnet.children())[:-1])
        network = torch.nn.Sequential(*list(model.children())[:-1])
        _load_source(backbone, network)
        outputs, x = {}, images
        with torch.no_grad():
            for index, module in enumerate(network.eval()):
                x = module(x)
                if 4 <= index <= 7:
                    outputs[STAGES[index - 4]] = x
        return outputs
    _load_source(backbone, model)
    return _eval_stages(model, images)


def _eval_stages(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    training = model.training
    try:
        with torch.no_grad():
            return stage_outputs(model.eval(), images)
    finally:
        model.train(training)


def _load_source(backbone: Backbone, network: torch.nn.Module) -> None:
    """Load the file's own tensors into ``network`` (its library's layout); every tensor must
    fit (``num_batches_tracked`` aside: frozen BN has none)."""
    result = network.load_state_dict(backbone.source.source_state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ConversionError(
            f"{backbone.origin}: the source network ({backbone.source.naming} layout) does not "
            f"take the file's tensors: missing {preview(missing)}; unexpected "
            f"{preview(result.unexpected_keys)}")


def _compare(path: Path, engine: str, loaded: dict[str, torch.Tensor],
             expected: dict[str, torch.Tensor], features: dict[str, torch.Tensor],
             backbone: Backbone) -> dict[str, float]:
    """Fail unless every expected tensor was loaded exactly and every stage output of the engine,
    and of the suite's torchvision model, matches the source network; returns the engine's max
    abs difference per stage."""
    not_loaded = [k for k, v in expected.items()
                  if k not in loaded or loaded[k].shape != v.shape or not torch.equal(loaded[k], v)]
    if not_loaded:
        raise ConversionError(f"{path}: {engine} did not load {len(not_loaded)} backbone "
                              f"tensor(s) as written: {preview(not_loaded, 12)}")
    reference = source_features(backbone, _fixed_input())
    broken = [stage for stage in STAGES if not bool(torch.isfinite(reference[stage]).all())]
    if broken:
        raise ConversionError(
            f"{backbone.origin}: the source network itself gives non-finite features "
            f"({', '.join(broken)}) on a fixed input: its weights are broken (e.g. BN statistics "
            "that overflow), so it is not a usable backbone and nothing is written")
    for name, got in ((engine, features),
                      ("the suite's torchvision model", _eval_stages(backbone.model,
                                                                     _fixed_input()))):
        errors = {}
        for stage in STAGES:
            if got[stage].shape != reference[stage].shape:
                raise ConversionError(f"{path}: {name} {stage} has shape "
                                      f"{tuple(got[stage].shape)}, the source network "
                                      f"{tuple(reference[stage].shape)}")
            errors[stage] = float((got[stage] - reference[stage]).abs().max()
                                  / reference[stage].abs().max().clamp_min(1e-12))
        bad = {s: e for s, e in errors.items() if not e <= FEATURE_RTOL}
        if bad:
            raise ConversionError(
                f"{path}: {name} features differ from the source network as trained beyond "
                f"tolerance {FEATURE_RTOL} (relative max error per stage: {bad}; stride in the "
                f"1x1 conv: {backbone.meta.get('stride_in_1x1', False)})")
    return {stage: float((features[stage] - reference[stage]).abs().max()) for stage in STAGES}


def detectron2_resnet_cfg(arch: str, stride_in_1x1: bool = False) -> Any:
    """detectron2 cfg for a ResNet under MoCo's detection protocol (RGB, torchvision's
    normalisation), with the stride convention the weights were trained with."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = RESNETS[arch].depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = RESNETS[arch].res2_channels
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = stride_in_1x1
    cfg.MODEL.RESNETS.NORM = "SyncBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = list(PIXEL_MEAN), list(PIXEL_STD)
    cfg.INPUT.FORMAT = "RGB"
    return cfg


def _detectron2_resnet(arch: str, stride_in_1x1: bool, norm: str = "SyncBN") -> torch.nn.Module:
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = detectron2_resnet_cfg(arch, stride_in_1x1)
    cfg.MODEL.RESNETS.NORM = norm
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


def _run_resnet(run_cfg: Any) -> torch.nn.Module:
    """The ResNet a run's config builds (every ``MODEL.RESNETS`` key as the run sets it), with
    all four stages out (a C4 config builds res5 in its ROI head from the same keys) and plain BN
    (the same eval-mode arithmetic as SyncBN, without a process group)."""
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = run_cfg.clone()
    cfg.defrost()
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    if cfg.MODEL.RESNETS.NORM == "SyncBN":
        cfg.MODEL.RESNETS.NORM = "BN"
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


def written_meta(path: Path, data: Any) -> dict[str, Any]:
    """The suite meta a converted file carries (detectron2: top level; mmpose: under meta)."""
    raw = data.get(META_KEY) if isinstance(data, dict) else None
    if raw is None and isinstance(data, dict) and isinstance(data.get("meta"), dict):
        raw = data["meta"].get(META_KEY)
    try:
        meta = json.loads(raw)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{path}: its '{META_KEY}' is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ConversionError(f"{path}: its '{META_KEY}' is not a JSON object")
    return meta


def verify_detectron2(path: str | os.PathLike, backbone: Backbone,
                      engine_cfg: Any = None) -> dict[str, float]:
    """Load ``path`` into detectron2's ResNet the way its DetectionCheckpointer does; compare
    tensors and res2..res5 with the source network. The ResNet is built from ``engine_cfg`` (a
    run's resolved config: its ``MODEL.RESNETS``, so an override such as ``STRIDE_IN_1X1 True``
    is verified as the run will build it), or else with the stride convention the file records.
    Returns the max abs difference per stage."""
    path = Path(path)
    data = load_pickle_arrays(path)  # proves the file is arrays-only before detectron2 unpickles
    if not (isinstance(data, dict) and isinstance(data.get("model"), dict)
            and "__author__" in data and data.get("matching_heuristics") is True):
        raise ConversionError(f"{path}: not a detectron2 weights file with 'model', "
                              "'__author__' and matching_heuristics=True")
    from detectron2.checkpoint import DetectionCheckpointer

    if engine_cfg is None:
        engine_resnet = _detectron2_resnet(
            backbone.meta["arch"], written_meta(path, data).get("stride_in_1x1") is True)
    else:
        engine_resnet = _run_resnet(engine_cfg)
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
    return _compare(path, "detectron2", engine_resnet.state_dict(), expected, features, backbone)


def verify_mmpose(path: str | os.PathLike, backbone: Backbone) -> dict[str, float]:
    """Build mmpose's ResNet in the style the file records with ``init_cfg=dict(type=
    'Pretrained', checkpoint=path)``, run its weight init (what mmpose's Runner does) and compare
    tensors and the four stage outputs with the source network. Returns the max abs difference
    per stage."""
    path = Path(path)
    from mmengine.logging import MMLogger
    from mmpose.models.backbones import ResNet

    written = torch.load(path, map_location="cpu", weights_only=True).get("meta", {})
    style = written.get("style") if isinstance(written, dict) else None
    if style not in ("pytorch", "caffe"):
        raise ConversionError(f"{path}: its meta does not record mmpose's ResNet style")
    engine_resnet = ResNet(depth=RESNETS[backbone.meta["arch"]].depth, out_indices=(0, 1, 2, 3),
                           style=style, init_cfg=dict(type="Pretrained", checkpoint=str(path)))
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
    return _compare(path, "mmpose", loaded, state, features, backbone)


# ------------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ssl-convert", description=__doc__.split("\n\n")[0],
        epilog="Reads the suite's backbone checkpoint or a torchvision/timm/MoCo/solo-learn/"
               "mmselfsup/VISSL/lightly/detectron2 ResNet; see pretrain/foreign/.")
    parser.add_argument("src", help="backbone checkpoint to convert")
    parser.add_argument("--to", required=True, choices=TARGETS, help="target engine")
    parser.add_argument("--out", required=True,
                        help="output file (detectron2: .pkl; mmpose: .pth); written only if it "
                             "verifies")
    parser.add_argument("--prefix", default=None,
                        help="key prefix of the backbone inside the file, e.g. 'module.encoder_q.'"
                             " (default: detected)")
    parser.add_argument("--stride-in-1x1", type=parse_bool, metavar="true|false",
                        help="for a ResNet-50 whose file does not say its stride convention: "
                             "true if trained with detectron2's default (stride in the first 1x1 "
                             "conv of a bottleneck), false for torchvision's (stride in the 3x3)")
    parser.add_argument("--stem", choices=READ_STEMS,
                        help="the padding of a 3x3 conv1 whose file does not say it: small pads "
                             "1, small-pad2 pads 2 as solo-learn does (neither engine takes one)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip loading the result into the engine (for machines without it)")
    args = parser.parse_args(argv)
    if args.to == "detectron2" and not args.out.endswith(".pkl"):
        parser.error("--out must end with .pkl for detectron2 (detectron2 reads .pkl files with "
                     "its model-zoo format rules and anything else as a torch checkpoint)")

    def convert() -> None:
        start = time.perf_counter()
        backbone = open_backbone(args.src, stem=args.stem, prefix=args.prefix,
                                 stride_in_1x1=args.stride_in_1x1)
        differences: dict[str, float] = {}
        out = export_backbone(backbone, args.to, args.out, verify=not args.no_verify,
                              differences=differences)
        print(f"{out}: {describe(backbone, args.to)}; " + (
            f"verified against the source network (max abs difference res5 "
            f"{differences['res5']:.3g})" if differences else "NOT verified (--no-verify)")
            + f", {time.perf_counter() - start:.1f} s")

    return run_main(convert)


def describe(backbone: Backbone, to: str) -> str:
    """What was read and how the engine must build it, in words (for the command's output)."""
    meta = backbone.meta
    if backbone.weights is None:
        return f"{meta['arch']} random-init control"
    text = (f"{meta['arch']} from {meta['source_format']}, copy {meta['copy']}; stride in the "
            f"{'1x1' if meta['stride_in_1x1'] else '3x3'} conv ({meta['stride_from']})")
    if meta["stride_in_1x1"]:
        text += ("; the file records it (suite_meta stride_in_1x1) and transfer/coco_det.py "
                 "applies it; with your own config set MODEL.RESNETS.STRIDE_IN_1X1 True, a stock "
                 "config gives wrong features" if to == "detectron2" else
                 "; the file records it (meta style='caffe') and transfer/mpii_pose.py applies "
                 "it; mmpose itself does not read it: with your own config set "
                 "model.backbone.style='caffe', a stock config gives wrong features")
    return text


if __name__ == "__main__":
    sys.exit(main())
