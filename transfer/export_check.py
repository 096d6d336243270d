"""Verifying a written backbone file in its engine (:func:`verify_detectron2`,
:func:`verify_mmpose`): the engine's own ResNet loads it as the engine does, every tensor is
compared with the source and res2..res5 on a fixed input with the source network as its library
builds it (transfer/convert.py says why and how)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

import transfer.compat  # noqa: F401,I001  (shims; before any detectron2 or mmpose import)
from pretrain.backbones import RESNETS, STAGES, stage_outputs
from pretrain.checkpoint import META_KEY, load_pickle_arrays
from pretrain.foreign import preview, resnet_skeleton
from pretrain.open_backbone import Backbone, move_stride_to_1x1
from transfer import export_formats
from transfer.export_formats import ConversionError

# torchvision mean/std on detectron2's 0-255 pixel scale, RGB (MoCo's detection protocol)
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]
FEATURE_RTOL = 1e-4  # max |difference| / max |source feature|, per stage

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
    expected = {export_formats.detectron2_name(k): v for k, v in backbone.model.state_dict().items()
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
