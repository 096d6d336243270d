"""What a file says about its own network, read without running anything, and checked against
its tensors: a contradiction is a one-line refusal.

- the network's name: ``arch`` (MoCo's ``main_moco.py``, timm's ``CheckpointSaver``) and the saved
  arguments' ``arch``/``model`` (DINO's and timm's ``args``);
- an mmengine Runner checkpoint's config (``meta['cfg']``, mmcv 1.x: ``meta['config']``: the
  ``Config.pretty_text`` it ran with), whose ``model.backbone`` is parsed as a Python literal
  (``ast``, never executed): type, depth, style, stem and the settings that change the network;
- the suite's own metadata (a file transfer/convert.py wrote carries it: detectron2 at the top
  level, mmpose under ``meta``).

The stem's geometry (:func:`stem_geometry`): a 3x3 conv1 is padded 1 by the suite, SimCLR-style
CIFAR ResNets and mmpretrain's ``ResNet_CIFAR``, but 2 by solo-learn (``solo/methods/base.py``:
``nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)``, no max-pool); the weights
have the same shape either way, so the file (or ``--stem``) must say which.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrain.backbones import RESNETS, STEM_GEOMETRY
from pretrain.checkpoint import META_KEY, CheckpointError
from pretrain.foreign.messages import one_line

MAX_CONFIG_CHARS = 1 << 20
# mmcv/mmpretrain/mmselfsup/mmpose ResNet types the suite reads, by the stem they build.
MM_RESNETS = {"ResNet": "imagenet", "ResNet_CIFAR": "small"}
# mmcv ResNet settings whose non-default values build another network than a torchvision ResNet.
MM_DEFAULTS = {"deep_stem": False, "avg_down": False, "num_stages": 4, "stem_channels": 64,
               "base_channels": 64, "in_channels": 3, "strides": (1, 2, 2, 2),
               "dilations": (1, 1, 1, 1)}
PLAIN_RESNET = re.compile(r"resnet(\d+)")


@dataclass(frozen=True)
class Claims:
    """What the file says about its network."""

    names: list[tuple[str, str]] = field(default_factory=list)  # (where, network name)
    backbone_cfg: dict[str, Any] | None = None                   # mmengine model.backbone
    mmengine: bool = False                                        # written by mmengine/mmcv


def read_claims(content: dict) -> Claims:
    """The claims in ``content`` (a file's top-level dict)."""
    names = [("arch", content["arch"])] if isinstance(content.get("arch"), str) else []
    args = content.get("args")
    saved = args if isinstance(args, dict) else getattr(args, "__dict__", {})
    for attribute in ("arch", "model"):
        value = saved.get(attribute)
        if isinstance(value, str):
            names.append((f"args.{attribute}", value))
    meta = content.get("meta")
    mmengine = "message_hub" in content or isinstance(meta, dict) and bool(
        {"mmengine_version", "mmcv_version", "cfg", "config"} & set(meta))
    text = next((meta[k] for k in ("cfg", "config") if isinstance(meta, dict)
                 and isinstance(meta.get(k), str)), None)
    return Claims(names, _mm_backbone(text) if text else None, mmengine)


def _mm_backbone(text: str) -> dict[str, Any] | None:
    """``model.backbone`` of an mmengine config's pretty text, or None when it has none that
    parses as literals."""
    if len(text) > MAX_CONFIG_CHARS:
        return None
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "model"
                                                for t in node.targets):
            model = _literal(node.value)
            backbone = model.get("backbone") if isinstance(model, dict) else None
            return backbone if isinstance(backbone, dict) else None
    return None


class _NotLiteral(Exception):
    pass


def _literal(node: ast.AST) -> Any:
    """A config value: ``dict(k=v, ...)`` calls and Python literals; anything else raises."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
            and not node.args and all(k.arg for k in node.keywords):
        return {k.arg: _literal_or_none(k.value) for k in node.keywords}
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError) as err:
        raise _NotLiteral from err


def _literal_or_none(node: ast.AST) -> Any:
    try:
        return _literal(node)
    except _NotLiteral:
        return None


def check_claims(path: Path, claims: Claims, arch: str, stem: str) -> None:
    """Refuse a file whose claims contradict its tensors (``arch``, and ``stem`` from conv1's
    shape: imagenet or small)."""
    depth = RESNETS[arch].depth
    for where, name in claims.names:
        segments = re.split(r"[./:]", name.lower())
        if "resnet" in segments:  # the family alone (timm's arch when no args): no depth said
            continue
        said = next((int(m.group(1)) for s in segments if (m := PLAIN_RESNET.fullmatch(s))),
                    None)
        if said != depth:
            raise CheckpointError(
                f"{path}: its '{where}' says the network is {name!r}, but its tensors are a "
                f"plain {arch}; the file contradicts itself (a wide/ResNeXt/modified ResNet, or "
                "weights saved under another model's name), so it is not read")
    cfg = claims.backbone_cfg
    if cfg is None:
        return
    kind = str(cfg.get("type", "")).rsplit(".", 1)[-1]
    where = "meta['cfg'] model.backbone"
    if kind not in MM_RESNETS:
        raise CheckpointError(f"{path}: its {where} is type={kind!r}; the suite reads "
                              f"plain ResNets ({', '.join(MM_RESNETS)}), whose tensors "
                              "and features it can check")
    changed = {k: cfg[k] for k, v in MM_DEFAULTS.items()
               if k in cfg and (tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k]) != v}
    if cfg.get("depth") != depth or changed:
        said = f"depth={cfg.get('depth')!r}" + "".join(f", {k}={v!r}" for k, v in changed.items())
        raise CheckpointError(f"{path}: its {where} says {kind}({said}), but its tensors are a "
                              f"plain torchvision-layout {arch}; the file contradicts itself or "
                              "builds a modified ResNet the suite does not read")
    if MM_RESNETS[kind] != ("imagenet" if stem == "imagenet" else "small"):
        raise CheckpointError(f"{path}: its {where} is {kind} (the {MM_RESNETS[kind]} stem), but "
                              f"its conv1 is the {stem} stem's; the file contradicts itself")


def mm_stride(path: Path, claims: Claims) -> tuple[bool | None, str]:
    """(stride_in_1x1, where read) from an mmengine file's config: ``style='caffe'`` puts the
    stride in the 1x1 conv; no style given is mmcv's default, 'pytorch'. (None, "") for a file
    with no such config."""
    cfg = claims.backbone_cfg
    if cfg is None:
        return None, ""
    style = cfg.get("style", "pytorch")
    if style not in ("pytorch", "caffe"):
        raise CheckpointError(f"{path}: its meta['cfg'] model.backbone has style={style!r}; "
                              "mmcv's ResNet takes 'pytorch' or 'caffe'")
    said = f"style={style!r}" if "style" in cfg else "no style: mmcv's default 'pytorch'"
    return style == "caffe", f"meta['cfg'] model.backbone {said}"


def stem_geometry(path: Path, shape_stem: str, claims: Claims, suite_meta: dict[str, Any],
                  solo_learn: bool, flag: str | None) -> tuple[str, str]:
    """(stem, where read) of a network whose conv1 is ``shape_stem`` (imagenet: 7x7; small:
    3x3, whose padding the file or ``flag`` must say)."""
    if shape_stem == "imagenet":
        return "imagenet", "7x7 conv1"
    said: list[tuple[str, str]] = []
    if suite_meta.get("stem"):
        said.append((str(suite_meta["stem"]), f"its {META_KEY}"))
    elif suite_meta:  # the suite's own small stem before stems were recorded
        said.append(("small", f"its {META_KEY}"))
    cfg = claims.backbone_cfg
    if cfg is not None and str(cfg.get("type", "")).rsplit(".", 1)[-1] == "ResNet_CIFAR":
        said.append(("small", "meta['cfg'] ResNet_CIFAR (3x3 conv1, padding 1)"))
    if solo_learn:
        said.append(("small-pad2", "solo-learn's CIFAR stem (3x3 conv1, padding 2)"))
    for stem, source in said:
        if stem not in STEM_GEOMETRY or STEM_GEOMETRY[stem].kernel != 3:
            raise CheckpointError(f"{path}: {source} says stem {stem!r}, but its conv1 is 3x3")
        if flag is not None and flag != stem:
            raise CheckpointError(f"--stem {flag}: {path} has stem {stem!r} ({source}); drop "
                                  "the flag or fix the file")
        return stem, source
    if flag is not None and STEM_GEOMETRY[flag].kernel == 3:
        return flag, "--stem"
    raise CheckpointError(
        f"{path}: a 3x3 conv1 (a CIFAR-style stem) and nothing in the file says its padding: "
        "the suite, SimCLR-style CIFAR ResNets and mmpretrain's ResNet_CIFAR pad 1, solo-learn "
        "pads 2, and the features differ. Pass --stem small (padding 1) or --stem small-pad2 "
        "(padding 2)")


def embedded_suite_meta(path: Path, content: dict) -> dict[str, Any]:
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
                              f"({one_line(err)}); the file was edited or damaged, convert it "
                              "again") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its '{META_KEY}' metadata is not a JSON object; the "
                              "file was edited or damaged, convert it again")
    return meta
