"""The suite's C4 recipes against MoCo's detection configs, key by key.

MoCo's files are transcribed below verbatim from facebookresearch/moco, ``detection/configs/``
(Base-RCNN-C4-BN.yaml, pascal_voc_R_50_C4_24k.yaml, pascal_voc_R_50_C4_24k_moco.yaml,
coco_R_50_C4_2x.yaml, coco_R_50_C4_2x_moco.yaml), merged over detectron2's defaults as MoCo's
``train_net.py`` merges them. Every key of the resolved config (the suite's file with its
``_BASE_`` chain through detectron2's model zoo) must equal MoCo's, except the listed deviations,
each with its reason."""
from __future__ import annotations

import pytest
import yaml

from transfer import detectron2_setup as setup

BASE_RCNN_C4_BN = """
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  RPN:
    PRE_NMS_TOPK_TEST: 6000
    POST_NMS_TOPK_TEST: 1000
  ROI_HEADS:
    NAME: "Res5ROIHeadsExtraNorm"
  BACKBONE:
    FREEZE_AT: 0
  RESNETS:
    # SyncBN seems to cause larger variance for unknown reasons
    NORM: "naiveSyncBN"
TEST:
  PRECISE_BN:
    ENABLED: True
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.02
"""
PASCAL_VOC_R_50_C4_24K = """
MODEL:
  MASK_ON: False
  WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
  ROI_HEADS:
    NUM_CLASSES: 20
INPUT:
  MIN_SIZE_TRAIN: (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
  MIN_SIZE_TEST: 800
DATASETS:
  TRAIN: ('voc_2007_trainval', 'voc_2012_trainval')
  TEST: ('voc_2007_test',)
SOLVER:
  STEPS: (18000, 22000)
  MAX_ITER: 24000
  WARMUP_ITERS: 100
"""
COCO_R_50_C4_2X = """
MODEL:
  MASK_ON: True
  WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
  MIN_SIZE_TEST: 800
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
SOLVER:
  STEPS: (120000, 160000)
  MAX_ITER: 180000
"""
MOCO_SUFFIX = """
MODEL:
  PIXEL_MEAN: [123.675, 116.280, 103.530]
  PIXEL_STD: [58.395, 57.120, 57.375]
  WEIGHTS: "See Instructions"
  RESNETS:
    STRIDE_IN_1X1: False
INPUT:
  FORMAT: "RGB"
"""  # pascal_voc_R_50_C4_24k_moco.yaml and coco_R_50_C4_2x_moco.yaml (identical bodies)
MOCO = {"voc": (BASE_RCNN_C4_BN, PASCAL_VOC_R_50_C4_24K, MOCO_SUFFIX),
        "coco": (BASE_RCNN_C4_BN, COCO_R_50_C4_2X, MOCO_SUFFIX)}
WEIGHTS = "the driver fills in a verified conversion of --weights"
ONE_X = "the 1x schedule of MCR Table 5 and detectron2's zoo (MoCo's file: 2x)"
# (the data sets are MoCo's names; the drivers register the suite's under their own names)
DEVIATIONS = {
    "pascal_voc_R_50_C4_24k_moco.yaml": ("voc", {"MODEL.WEIGHTS": WEIGHTS}),
    "coco_R_50_C4_1x_moco.yaml": ("coco", {
        "MODEL.WEIGHTS": WEIGHTS,
        "SOLVER.STEPS": ONE_X, "SOLVER.MAX_ITER": ONE_X}),
}


def _flat(node: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _moco(files: tuple[str, ...]) -> dict[str, object]:
    cfg = setup.get_cfg()
    for text in files:
        cfg.merge_from_other_cfg(setup.CfgNode(yaml.safe_load(text)))
    return _flat(cfg)


@pytest.mark.parametrize("name", sorted(DEVIATIONS))
def test_c4_recipe_is_mocos_key_by_key(name: str) -> None:
    moco_files, deviations = DEVIATIONS[name]
    ours, theirs = _flat(setup.load_config(setup.CONFIG_DIR / name)), _moco(MOCO[moco_files])
    assert set(ours) == set(theirs)
    differing = {key: (ours[key], theirs[key]) for key in ours if ours[key] != theirs[key]}
    assert set(differing) == set(deviations), differing

