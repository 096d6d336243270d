"""Pascal VOC 07+12 detection transfer on detectron2 (MoCo's protocol), scored by
``PascalVOCDetectionEvaluator`` (AP50, AP, AP75).

    python transfer/voc_det.py --weights FILE [--config-file YAML] [--data VOCDEVKIT] [--out DIR]
                               [--trials N] [--eval-only] [--resume] [--gpus N] [KEY VALUE ...]

detectron2 trains and scores: ``DefaultTrainer``, its VOC reader (``register_pascal_voc``) and
``PascalVOCDetectionEvaluator`` (the devkit's AP in Python; VOC 2007 test with the 11-point
metric, AP averaged over IoU 0.50:0.95, AP50 and AP75), as MoCo's ``detection/train_net.py``
runs it. What the suite's detectron2 drivers share (the backbone conversion verified with the
run's config, the load guard after detectron2 loads, run folders, ``--gpus``, the CPU refusal,
leaderboard rows with recipe, budget and deviations) is ``transfer/detectron2_driver.py``.

- recipes (``transfer/configs``): ``pascal_voc_R_50_C4_24k_moco.yaml``, MoCo's Faster R-CNN
  R50-C4 on VOC 2007+2012 trainval, tested on VOC 2007 test, 24k iterations (the default for a
  ResNet-50 with ``--data`` on a GPU; MoCo's published numbers are its reference rows);
  ``pascal_voc_R_50_FPN_24k_moco.yaml`` for ResNet-18/34 there (C4 needs a ResNet-50; not a
  published recipe); ``voc_cpu_FPN_128px.yaml`` on the embedded set or without a GPU.
- the data: ``--data`` is VOC's official layout (``VOCdevkit/VOC2007``, ``VOC2012``:
  ``JPEGImages/``, ``Annotations/*.xml``, ``ImageSets/Main/{trainval,test}.txt``), checked
  first by ``pretrain/data/voc.py`` (every field detectron2 reads); the classes are VOC's 20
  in VOC's order, those the data uses. Without ``--data``: the embedded synthetic set
  (``pretrain.synthetic.default_root()/voc``, whose training backgrounds predict the class);
  where the layout lists ``VOC2007/ImageSets/Main/test_home.txt`` (the synthetic set's test
  images on the training backgrounds) it is scored too, as ``home_bbox_*``: the shortcut gap.
- ``--trials N`` runs N fine-tunings, seeds ``--seed`` ... ``--seed + N - 1``, each in
  ``--out/seed<S>``, and writes ``--out/trials.json`` with each metric's mean and 95% t-interval:
  MoCo reports means of 5 trials and expects a std of 0.2 / 0.2 / 0.4 on AP50 / AP / AP75.

Outputs in ``--out`` (default ``runs/voc_det/<weights>-<config>-seed<seed>``): those of
``transfer/detectron2_driver.py``; leaderboard rows: task ``voc_det``, protocol ``finetune``,
metrics ``bbox_AP50``, ``bbox_AP``, ``bbox_AP75``, one row per trial (its seed).
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

# isort: off
import transfer.compat  # noqa: F401  (shims; before any detectron2 import)
# isort: on

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_pascal_voc
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from pretrain.backbones import RESNETS
from pretrain.cli import claim_output, number, run_main
from pretrain.data.voc import (
    DETECTION_SPLITS,
    HOME_TEST,
    detection_classes,
    devkit,
    has_home_test,
    validate_detection,
)
from pretrain.files import atomic_write
from transfer import detectron2_driver as driver
from transfer.detectron2_driver import DriverSettings
from transfer.detectron2_setup import CONFIG_DIR

C4_CONFIG = CONFIG_DIR / "pascal_voc_R_50_C4_24k_moco.yaml"
FPN_CONFIG = CONFIG_DIR / "pascal_voc_R_50_FPN_24k_moco.yaml"
CPU_CONFIG = CONFIG_DIR / "voc_cpu_FPN_128px.yaml"
# detectron2 names (suite_ prefix: its built-in voc_* names point at ./datasets)
DATASETS = {split: tuple(f"suite_voc_{year}_{image_set}" for year, image_set in sets)
            for split, sets in DETECTION_SPLITS.items()}
METRICS = ("AP50", "AP", "AP75")
TRIALS_FILE = "trials.json"

TASK = "voc_det"  # its leaderboard rows' task

@dataclass(frozen=True)
class VocDetConfig(DriverSettings):
    """One run's settings (:class:`DriverSettings`) and ``--trials``."""

    trials: int = 1


class Trainer(driver.SuiteTrainer):
    """Faster R-CNN on VOC, scored with detectron2's PascalVOCDetectionEvaluator."""

    TASK, COMMAND = TASK, "transfer/voc_det.py"
    RECIPES = {"pascal_voc_R_50_C4_24k_moco": "R50-C4-24k"}
    CPU_CONFIG, METRIC_NAMES = CPU_CONFIG, METRICS

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str,
                        output_folder: str | None = None) -> PascalVOCDetectionEvaluator:
        return PascalVOCDetectionEvaluator(dataset_name)

    @classmethod
    def default_config(cls, arch: str, real_data: bool) -> Path:
        """MoCo's R50-C4 recipe for a ResNet-50 on real data with a GPU (FPN for ResNet-18/34);
        the CPU recipe on the embedded set or without a GPU."""
        if not real_data or not torch.cuda.is_available():
            return CPU_CONFIG
        return C4_CONFIG if RESNETS[arch].bottleneck else FPN_CONFIG

    @classmethod
    def check_data(cls, settings: DriverSettings) -> dict[str, Any]:
        home = has_home_test(settings.data)
        if home:
            validate_detection(settings.data, HOME_TEST)
        return {"classes": detection_classes(settings.data), "devkit": str(devkit(settings.data)),
                "splits": ("train", "test", HOME_TEST) if home else ("train", "test")}

    @classmethod
    def register_data(cls, settings: DriverSettings, info: dict[str, Any]) -> None:
        for split in info["splits"]:
            for name, (year, image_set) in zip(DATASETS[split], DETECTION_SPLITS[split]):
                if name not in DatasetCatalog.list():
                    register_pascal_voc(name, str(Path(info["devkit"]) / f"VOC{year}"),
                                        image_set, int(year), info["classes"])

    @classmethod
    def configure(cls, cfg: CfgNode, info: dict[str, Any]) -> None:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(info["classes"])
        cfg.DATASETS.TRAIN = DATASETS["train"]
        cfg.DATASETS.TEST = sum((DATASETS[split] for split in info["splits"][1:]), ())

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module, evaluators: Any = None) -> dict:
        """detectron2's results, with the home-scene test set's (where the data has one) as
        ``home_bbox`` beside ``bbox``: the shortcut's gap (benchmarks/results/gaps.py)."""
        results = super().test(cfg, model, evaluators)
        if len(cfg.DATASETS.TEST) == 1 or not comm.is_main_process():
            return results
        (test,), (home,) = DATASETS["test"], DATASETS[HOME_TEST]
        return {"bbox": results[test]["bbox"], "home_bbox": results[home]["bbox"]}


def run_trials(settings: VocDetConfig) -> dict[str, Any]:
    """``settings.trials`` fine-tunings (seeds ``seed``, ``seed + 1``, ...), each in
    ``out/seed<S>``; ``out/trials.json``: every trial's metrics, each metric's mean and 95%
    t-interval. One trial runs in ``out`` itself and returns its metrics.json."""
    if settings.trials == 1:
        return driver.run(Trainer, settings)
    from benchmarks.results.stats import t_interval

    claim_output(settings.out, Trainer.COMMAND)
    runs = []
    for seed in range(settings.seed, settings.seed + settings.trials):
        runs.append(driver.run(Trainer, replace(settings, seed=seed,
                                                out=settings.out / f"seed{seed}")))
        # default_setup adds the run folder's log file to these loggers: the next trial logs
        # into its own folder only
        for name in ("detectron2", "fvcore"):
            logging.getLogger(name).handlers.clear()
        setup_logger.cache_clear()
    if settings.machine_rank != 0:
        return {}
    values = {name: [r["metrics"]["bbox"][name] for r in runs] for name in METRICS}
    summary = {"trials": settings.trials, "seeds": [r["seed"] for r in runs], "metrics": {
        name: dict(zip(("mean", "low", "high"), t_interval(v)), values=v)
        for name, v in values.items() if None not in v}}
    atomic_write(settings.out / TRIALS_FILE,
                 lambda f: f.write(json.dumps(summary, indent=2).encode()))
    return summary


def build_parser() -> Any:
    """The shared detectron2 command line (:func:`driver.build_parser`) and ``--trials``."""
    p = driver.build_parser(
        "ssl-voc-det", __doc__.split("\n\n")[0],
        epilog=f"--config-file (in transfer/configs/) defaults to {C4_CONFIG.name} for a "
               f"ResNet-50 and {FPN_CONFIG.name} for ResNet-18/34 with --data on a GPU, else "
               f"{CPU_CONFIG.name}. Config overrides KEY VALUE ... come last.",
        data_help="VOCdevkit folder (VOC2007/, VOC2012/: JPEGImages, Annotations, "
                  "ImageSets/Main) or the folder above it; default: the embedded synthetic set")
    p.add_argument("--trials", type=number(), default=1, metavar="N",
                   help="fine-tunings with seeds --seed ... --seed+N-1, reported as a mean and "
                        "interval (MoCo: 5)")
    return p


def parse_args(argv: list[str] | None = None) -> VocDetConfig:
    """The command line, checked and resolved into the run's :class:`VocDetConfig`."""
    return driver.parse_settings(build_parser(), argv, VocDetConfig, Trainer.TASK, "voc")


def main(argv: list[str] | None = None) -> int:
    def train_and_score() -> None:
        settings = parse_args(argv)
        summary = run_trials(settings)
        if summary:
            keys = ("trials", "metrics") if settings.trials > 1 else (
                "metrics", "train_seconds", "eval_seconds", "convert_seconds")
            print(json.dumps({k: summary[k] for k in keys}, indent=2))
            print(f"run folder: {settings.out}")

    from benchmarks.results.leaderboard import LeaderboardError

    return run_main(train_and_score, statuses={LeaderboardError: 2})


if __name__ == "__main__":
    sys.exit(main())
