"""Semantic segmentation transfer on detectron2 (Semantic FPN) on Pascal VOC 2012, scored by
``SemSegEvaluator`` (mIoU, pixel accuracy, per-class IoU).

    python transfer/semseg.py --weights FILE [--config-file YAML] [--data VOCDEVKIT] [--out DIR]
                              [--eval-only] [--resume] [--gpus N] [KEY VALUE ...]

detectron2 trains and scores: ``DefaultTrainer`` with its ``SemanticSegmentor`` (Semantic FPN,
the model zoo's ``Misc/semantic_R_50_FPN_1x.yaml``), its ``DatasetMapper`` and
``SemSegEvaluator``. What the suite's detectron2 drivers share (the backbone conversion verified
with the run's config, the load guard, run folders, ``--gpus``, the CPU refusal, leaderboard
rows) is ``transfer/detectron2_driver.py``.

- recipes (``transfer/configs``): ``voc_semseg_R_50_FPN_1x_moco.yaml`` (the zoo's Semantic FPN
  1x with MoCo's backbone conventions and VOC's input sizes: the suite's choice, which no stored
  paper reports, so no reference numbers are shown for it; the default with ``--data`` on a
  GPU) and ``voc_semseg_cpu_FPN_128px.yaml`` (on the embedded set or without a GPU).
- the data: ``--data`` is VOC's layout (``VOCdevkit/VOC2012``: ``JPEGImages/``,
  ``SegmentationClass/*.png``: palette PNGs, 0 background, 1-20 VOC's classes, 255 ignored;
  ``ImageSets/Segmentation/{train,val}.txt``), checked by ``pretrain/data/voc.py``. Where the
  augmented set is laid out as mmsegmentation's ``voc_aug.py`` writes it
  (``SegmentationClassAug/`` and ``ImageSets/Segmentation/aug.txt``) training uses it. The
  labels are rewritten once into the run folder as grey PNGs (``labels/``: detectron2 reads a
  label PNG as greyscale, which turns a palette PNG's indices into luminances), each value
  checked. Without ``--data``: the embedded synthetic set, whose val backgrounds no longer
  predict the class.
- Cityscapes is not offered: its evaluator needs ``cityscapesscripts``, which this environment
  does not install.

Outputs in ``--out`` (default ``runs/semseg/<weights>-<config>-seed<seed>``): those of
``transfer/detectron2_driver.py`` (``metrics.json`` with every class's IoU and accuracy);
leaderboard rows: task ``semseg``, protocol ``finetune``, metrics ``sem_seg_mIoU``,
``sem_seg_pACC``, ``sem_seg_mACC``, ``sem_seg_fwIoU``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

# isort: off
import transfer.compat  # noqa: F401  (shims; before any detectron2 import)
# isort: on

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator

from pretrain.cli import run_main
from pretrain.data.voc import (
    IGNORE_LABEL,
    VOC_CLASSES,
    VocLayoutError,
    devkit,
    segmentation_training_set,
    validate_segmentation,
)
from pretrain.files import atomic_write
from transfer import detectron2_driver as driver
from transfer.detectron2_driver import DriverSettings
from transfer.detectron2_setup import CONFIG_DIR

GPU_CONFIG = CONFIG_DIR / "voc_semseg_R_50_FPN_1x_moco.yaml"
CPU_CONFIG = CONFIG_DIR / "voc_semseg_cpu_FPN_128px.yaml"
TRAIN_SET, TEST_SET = "suite_voc_2012_sem_seg_train", "suite_voc_2012_sem_seg_val"
CLASSES = ("background", *VOC_CLASSES)  # label i is CLASSES[i]
LABELS = "labels"  # the run folder's grey label PNGs

TASK = "semseg"  # its leaderboard rows' task

class Trainer(driver.SuiteTrainer):
    """Semantic FPN on VOC 2012, scored with detectron2's SemSegEvaluator."""

    TASK, COMMAND = TASK, "transfer/semseg.py"
    RECIPES: dict[str, str] = {}  # none published: rows are named by their config file
    CPU_CONFIG, METRIC_NAMES = CPU_CONFIG, ("mIoU", "pACC", "mACC", "fwIoU")

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str,
                        output_folder: str | None = None) -> SemSegEvaluator:
        return SemSegEvaluator(dataset_name, distributed=True,
                               output_dir=output_folder or str(Path(cfg.OUTPUT_DIR) / "inference"))

    @classmethod
    def default_config(cls, arch: str, real_data: bool) -> Path:
        return GPU_CONFIG if real_data and torch.cuda.is_available() else CPU_CONFIG

    @classmethod
    def check_data(cls, settings: DriverSettings) -> dict[str, Any]:
        split, labels = segmentation_training_set(settings.data)
        return {"devkit": str(devkit(settings.data)),
                "train": (validate_segmentation(settings.data, split, labels), labels),
                "val": (validate_segmentation(settings.data, "val"), "SegmentationClass")}

    @classmethod
    def prepare_data(cls, settings: DriverSettings, info: dict[str, Any]) -> dict[str, Any]:
        """Every label rewritten as a grey PNG in the run folder, its values checked."""
        year_dir, out = Path(info["devkit"]) / "VOC2012", settings.out / LABELS
        out.mkdir(exist_ok=True)
        allowed = np.zeros(256, bool)
        allowed[[*range(len(CLASSES)), IGNORE_LABEL]] = True
        for split in ("train", "val"):
            ids, folder = info[split]
            for image_id in ids:
                path = year_dir / folder / f"{image_id}.png"
                with Image.open(path) as label:
                    if label.mode not in ("P", "L"):
                        raise VocLayoutError(f"{path}: a {label.mode} image; a label PNG holds "
                                             "class indices (palette or grey)")
                    values = np.asarray(label)
                if not allowed[values].all():
                    wrong = np.unique(values[~allowed[values]]).tolist()
                    raise VocLayoutError(f"{path}: label values {wrong} are not classes "
                                         f"(0-{len(CLASSES) - 1}) or ignore ({IGNORE_LABEL})")
                atomic_write(out / f"{image_id}.png",
                             lambda f, v=values: Image.fromarray(v, "L").save(f, format="PNG"))
        return info

    @classmethod
    def register_data(cls, settings: DriverSettings, info: dict[str, Any]) -> None:
        year_dir = Path(info["devkit"]) / "VOC2012"
        for name, split in ((TRAIN_SET, "train"), (TEST_SET, "val")):
            if name in DatasetCatalog.list():
                continue
            records = [{"file_name": str(year_dir / "JPEGImages" / f"{image_id}.jpg"),
                        "sem_seg_file_name": str(settings.out / LABELS / f"{image_id}.png"),
                        "image_id": image_id} for image_id in info[split][0]]
            for record in records:  # outputs are resized to the image's own size for scoring
                with Image.open(record["file_name"]) as img:
                    record["width"], record["height"] = img.size
            DatasetCatalog.register(name, lambda records=records: records)
            MetadataCatalog.get(name).set(stuff_classes=list(CLASSES), ignore_label=IGNORE_LABEL,
                                          evaluator_type="sem_seg")

    @classmethod
    def configure(cls, cfg: CfgNode, info: dict[str, Any]) -> None:
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(CLASSES)
        cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = IGNORE_LABEL
        cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (TRAIN_SET,), (TEST_SET,)


def build_parser() -> Any:
    """The shared detectron2 command line (:func:`driver.build_parser`)."""
    return driver.build_parser(
        "ssl-semseg", __doc__.split("\n\n")[0],
        epilog=f"--config-file (in transfer/configs/) defaults to {GPU_CONFIG.name} with --data "
               f"on a GPU, else {CPU_CONFIG.name}. Config overrides KEY VALUE ... come last.",
        data_help="VOCdevkit folder (VOC2012/: JPEGImages, SegmentationClass, "
                  "ImageSets/Segmentation) or the folder above it; default: the embedded "
                  "synthetic set")


def parse_args(argv: list[str] | None = None) -> DriverSettings:
    """The command line, checked and resolved into the run's :class:`DriverSettings`."""
    return driver.parse_settings(build_parser(), argv, DriverSettings, Trainer.TASK, "voc")


def main(argv: list[str] | None = None) -> int:
    def train_and_score() -> None:
        settings = parse_args(argv)
        summary = driver.run(Trainer, settings)
        if summary:
            scores = {k: summary["metrics"]["sem_seg"][k] for k in Trainer.METRIC_NAMES}
            print(json.dumps({"metrics": {"sem_seg": scores}, **{
                k: summary[k] for k in ("train_seconds", "eval_seconds", "convert_seconds")}},
                indent=2))
            print(f"run folder: {settings.out}")

    from benchmarks.results.leaderboard import LeaderboardError

    return run_main(train_and_score, statuses={LeaderboardError: 2})


if __name__ == "__main__":
    sys.exit(main())
