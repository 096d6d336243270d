"""COCO Mask R-CNN transfer on detectron2, scored by pycocotools (box and mask AP).

    python transfer/coco_det.py --weights FILE [--config-file YAML] [--data COCO_ROOT] [--out DIR]
                                [--eval-only] [--resume] [--gpus N] [KEY VALUE ...]

detectron2 trains and scores (``DefaultTrainer``, its COCO data loading, ``COCOEvaluator``:
pycocotools, the pure-Python path ``use_fast_impl=False``, as this install has no
``detectron2._C``); what the suite's detectron2 drivers share (the backbone conversion verified
with the run's config, the load guard, run folders, ``--gpus``, the CPU refusal, leaderboard
rows) is ``transfer/detectron2_driver.py``. This driver adds:

- configs (``transfer/configs``): MoCo's detection protocol on the zoo's Mask R-CNN R50-C4 1x
  (``coco_R_50_C4_1x_moco.yaml``, with MoCo's ``Res5ROIHeadsExtraNorm`` and BN flavour: MCR
  Table 5's protocol, the default for a ResNet-50 with ``--data`` on a GPU) and R50-FPN 1x
  (``coco_R_50_FPN_1x_moco.yaml``, the default for ResNet-18/34 there), and the CPU recipe
  ``coco_cpu_FPN_128px.yaml`` (the default on the embedded set or without a GPU).
- the data: ``--data`` is a COCO root (``annotations/instances_{train,val}2017.json``,
  ``train2017/``, ``val2017/``); both files are checked first by the COCO reader
  (``pretrain/data.py``: fields, ids, image files) and registered with
  ``register_coco_instances``; ``NUM_CLASSES`` follows the categories. Without ``--data``: the
  embedded synthetic set (``pretrain.synthetic.default_root()/coco``). ``--val-images N``
  scores the first N val images only (a quick check).

Outputs in ``--out`` (default ``runs/coco_det/<weights>-<config>-seed<seed>``): those of
``transfer/detectron2_driver.py``; ``metrics.json`` holds bbox and segm AP, AP50, AP75, APs, APm,
APl and per category, plus timings; leaderboard rows: task ``coco_det``, protocol ``finetune``,
metrics ``bbox_AP``, ..., ``segm_APl``.

Several GPUs: ``--gpus 8`` (detectron2's ``--num-gpus`` is its alias); several machines:
``--num-machines``, ``--machine-rank`` and ``--dist-url`` as in detectron2's ``train_net.py``.

CPU: the embedded default (ResNet-50, 150 iterations of 4 images, 500 test images) used 434 s of
CPU time (user + sys, one thread) on a 2-core CPU. On a CPU shared with other jobs set
``OMP_NUM_THREADS=1``: two threads under contention spent 3x the CPU time per iteration
(5.9 s against 1.9 s) and ran 3x slower.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

# isort: off
import transfer.compat  # noqa: F401  (shims; before any detectron2 import)
# isort: on

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator

from pretrain.backbones import RESNETS
from pretrain.cli import number, run_main
from pretrain.data import coco_files, validate_coco
from pretrain.files import atomic_write
from transfer import detectron2_driver as driver
from transfer.detectron2_driver import DriverSettings
from transfer.detectron2_setup import CONFIG_DIR, DriverError, load_config

C4_CONFIG = CONFIG_DIR / "coco_R_50_C4_1x_moco.yaml"
FULL_CONFIG = FPN_CONFIG = CONFIG_DIR / "coco_R_50_FPN_1x_moco.yaml"
CPU_CONFIG = CONFIG_DIR / "coco_cpu_FPN_128px.yaml"
TRAIN_SET, TEST_SET = "suite_coco_train", "suite_coco_val"
SPLITS = {TRAIN_SET: "train", TEST_SET: "val"}
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
CocoDetError = DriverError  # the name this driver's errors had before the drivers shared one

TASK = "coco_det"  # its leaderboard rows' task

@dataclass(frozen=True)
class CocoDetConfig(DriverSettings):
    """One run's settings (:class:`DriverSettings`) and ``--val-images``."""

    val_images: int | None = None


class Trainer(driver.SuiteTrainer):
    """Mask R-CNN on COCO, scored with COCOEvaluator (pure-Python pycocotools path)."""

    TASK, COMMAND = TASK, "transfer/coco_det.py"
    RECIPES = {"coco_R_50_C4_1x_moco": "R50-C4-1x", "coco_R_50_FPN_1x_moco": "R50-FPN-1x"}
    CPU_CONFIG, METRIC_NAMES = CPU_CONFIG, METRICS

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str,
                        output_folder: str | None = None) -> COCOEvaluator:
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluator(dataset_name, tasks=tasks, distributed=True,
                             output_dir=output_folder or str(Path(cfg.OUTPUT_DIR) / "inference"),
                             use_fast_impl=False)

    @classmethod
    def default_config(cls, arch: str, real_data: bool) -> Path:
        """On real data with a GPU, MoCo's R50-C4 1x protocol for a ResNet-50 (MCR Table 5,
        SimSiam's and Barlow Twins' baselines) and R50-FPN 1x for ResNet-18/34 (C4 needs
        Bottleneck blocks); the CPU recipe on the embedded set or without a GPU."""
        if not real_data or not torch.cuda.is_available():
            return CPU_CONFIG
        return C4_CONFIG if RESNETS[arch].bottleneck else FPN_CONFIG

    @classmethod
    def check_data(cls, settings: DriverSettings) -> dict[str, Any]:
        masks = "MODEL.MASK_ON" in settings.opts or (  # every default recipe has masks
            settings.config_file is None or load_config(settings.config_file).MODEL.MASK_ON)
        categories = [sorted(c["id"] for c in validate_coco(*coco_files(settings.data, split),
                                                            masks=masks)["categories"])
                      for split in SPLITS.values()]
        if categories[0] != categories[1]:
            raise DriverError(f"{settings.data}: train and val list different categories "
                              f"({categories[0]} vs {categories[1]})")
        return {"num_classes": len(categories[0]), "val_json": None}

    @classmethod
    def prepare_data(cls, settings: CocoDetConfig, info: dict[str, Any]) -> dict[str, Any]:
        if not settings.val_images:
            return info
        return {**info, "val_json": val_subset(settings.data, settings.out, settings.val_images)}

    @classmethod
    def register_data(cls, settings: DriverSettings, info: dict[str, Any]) -> None:
        """Register train2017 and val2017 (or the val subset) with detectron2."""
        for name in SPLITS:
            if name not in DatasetCatalog.list():
                json_file, image_root = coco_files(settings.data, SPLITS[name])
                if name == TEST_SET and info["val_json"] is not None:
                    json_file = info["val_json"]
                register_coco_instances(name, {}, str(json_file), str(image_root))

    @classmethod
    def configure(cls, cfg: CfgNode, info: dict[str, Any]) -> None:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = info["num_classes"]
        cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (TRAIN_SET,), (TEST_SET,)

    @classmethod
    def deviations(cls, settings: CocoDetConfig) -> dict[str, Any]:
        return {"val_images": settings.val_images}


write_outputs = partial(driver.write_outputs, Trainer)


def val_subset(data: Path, out: Path, n: int) -> Path:
    """The first ``n`` images of val2017 with their annotations, as a COCO json in the run
    folder (so pycocotools scores exactly the images evaluated)."""
    doc = json.loads(coco_files(data, "val")[0].read_text())
    doc["images"] = doc["images"][:n]
    kept = {image["id"] for image in doc["images"]}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in kept]
    path = out / f"instances_val2017_first{n}.json"
    atomic_write(path, lambda f: f.write(json.dumps(doc).encode()))
    return path


def build_parser() -> Any:
    """The shared detectron2 command line (:func:`driver.build_parser`) and ``--val-images``."""
    p = driver.build_parser(
        "ssl-coco-det", __doc__.split("\n\n")[0],
        epilog=f"--config-file (in transfer/configs/) defaults to {C4_CONFIG.name} for a "
               f"ResNet-50 and {FPN_CONFIG.name} for ResNet-18/34 with --data on a GPU, else "
               f"{CPU_CONFIG.name}. Config overrides KEY VALUE ... come last.",
        data_help="COCO root (annotations/instances_{train,val}2017.json, train2017/, "
                  "val2017/); default: the embedded synthetic set")
    p.add_argument("--val-images", type=number(), default=None, metavar="N",
                   help="evaluate on the first N val2017 images only (a quick check; the "
                        "protocol evaluates all)")
    return p


def parse_args(argv: list[str] | None = None) -> CocoDetConfig:
    """The command line, checked and resolved into the run's :class:`CocoDetConfig`."""
    return driver.parse_settings(build_parser(), argv, CocoDetConfig, Trainer.TASK, "coco")


def main(argv: list[str] | None = None) -> int:
    def train_and_score() -> None:
        settings = parse_args(argv)  # inside: making the default data may fail (a full disk)
        summary = driver.run(Trainer, settings)
        if summary:
            print(json.dumps({k: summary[k] for k in ("metrics", "train_seconds", "eval_seconds",
                                                     "convert_seconds")}, indent=2))
            print(f"run folder: {settings.out}")

    from benchmarks.results.leaderboard import LeaderboardError

    return run_main(train_and_score, statuses={LeaderboardError: 2})


if __name__ == "__main__":
    sys.exit(main())
