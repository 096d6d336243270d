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
import os
import sys
import time
from pathlib import Path
from typing import Any

from pretrain.backbones import READ_STEMS
from pretrain.cli import run_main
from pretrain.files import atomic_write
from pretrain.foreign import parse_bool
from pretrain.open_backbone import Backbone, open_backbone
from transfer.export_check import detectron2_resnet_cfg, verify_detectron2, verify_mmpose
from transfer.export_formats import (
    TARGETS,
    ConversionError,
    detectron2_bytes,
    detectron2_name,
    mmpose_bytes,
    mmpose_style,
)

__all__ = ["ConversionError", "detectron2_name", "detectron2_resnet_cfg", "export_backbone",
           "mmpose_style", "verify_detectron2", "verify_mmpose"]


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
    payload = (detectron2_bytes if to == "detectron2" else mmpose_bytes)(
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
