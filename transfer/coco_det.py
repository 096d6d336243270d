"""COCO Mask R-CNN transfer on detectron2, scored by pycocotools (box and mask AP).

    python transfer/coco_det.py --weights FILE [--config-file YAML] [--data COCO_ROOT] [--out DIR]
                                [--eval-only] [--resume] [--num-gpus N] [KEY VALUE ...]

Everything that trains and scores is detectron2's own: ``DefaultTrainer`` (its loop, hooks,
checkpoints, TensorBoard and log), its COCO data loading, ``COCOEvaluator`` (pycocotools; the
pure-Python path, ``use_fast_impl=False``, as this install has no ``detectron2._C``) and
``launch`` for several GPUs or machines, and its command line (``default_argument_parser``:
``--config-file``, ``--resume``, ``--eval-only``, the launcher's flags and ``KEY VALUE`` config
overrides at the end). This driver adds:

- the backbone: ``--weights`` is opened once by ``pretrain/open_backbone.py`` (any checkpoint
  format it reads, or ``random``: the suite's random-init control, whose zero-initialised residual
  branches keep Mask R-CNN from diverging; ``--arch``, default resnet50, and ``--seed``), written
  into the run folder (``backbone_detectron2.pkl``) and verified against detectron2's own ResNet
  by ``transfer/convert.py`` before detectron2 sees it, so detectron2 only ever unpickles a file
  this suite wrote and re-read with its arrays-only unpickler. The depth (``RESNETS.DEPTH``,
  ``RES2_OUT_CHANNELS``, from ``pretrain/backbones.py``) follows the weights; C4 needs a ResNet-50.
- configs (``transfer/configs``): MoCo's detection protocol on the zoo's Mask R-CNN R50-C4 1x
  (``coco_R_50_C4_1x_moco.yaml``, with MoCo's ``Res5ROIHeadsExtraNorm``: MCR Table 5's protocol,
  the default for a ResNet-50 with ``--data`` on a GPU) and R50-FPN 1x
  (``coco_R_50_FPN_1x_moco.yaml``, the default for ResNet-18/34 there), and the CPU recipe
  ``coco_cpu_FPN_128px.yaml`` (the default on the embedded set or without a GPU). A recipe whose
  training batch holds more than ``CPU_BATCH_PIXELS`` pixels is refused on a CPU in one line
  naming the CPU recipe (``MODEL.DEVICE cpu`` among the overrides runs it anyway). ``_BASE_:
  "model_zoo:<path>"`` names a file of detectron2's model zoo; other bases are relative paths.
  A base (and each base it names) must lie in the zoo or ``transfer/configs`` and is read with
  ``yaml.safe_load`` (``transfer/compat.py``).
- the data: ``--data`` is a COCO root (``annotations/instances_{train,val}2017.json``,
  ``train2017/``, ``val2017/``); both files are checked first (fields, ids, image files) and
  registered with ``register_coco_instances``; ``NUM_CLASSES`` follows the categories. The
  checks are the COCO reader's (``pretrain/data.py``: fields, ids, image files).
  Without ``--data``: the embedded synthetic set (``pretrain.synthetic.default_root()/coco``).

Outputs in ``--out`` (default ``runs/coco_det/<weights>-<config>-seed<seed>``): ``config.yaml``
(the resolved config), ``log.txt``, TensorBoard events and ``train_log.json`` (detectron2's
per-iteration scalars), ``model_final.pth``, ``backbone.json``
(where the backbone came from), ``metrics.json`` (bbox and segm AP, AP50, AP75, APs, APm, APl and
per category, plus timings) and rows in the leaderboard CSV (task ``coco_det``, protocol
``finetune``, metrics ``bbox_AP``, ..., ``segm_APl``).

The conversion is verified in the ResNet the run's own resolved config builds (config file, the
weights' depth and stride convention, then the ``KEY VALUE`` overrides: an override that
contradicts the weights, such as ``MODEL.RESNETS.STRIDE_IN_1X1 True`` for torchvision weights,
stops the run). After detectron2 has built and loaded the model, every tensor of the file it read
(the converted backbone, C4's res5 under ``roi_heads.res5`` included, or with ``--resume`` and
``--eval-only`` the run's checkpoint) must be in the model as written, or the run stops naming
the tensors (:func:`check_loaded`; detectron2 only logs them).

``--resume`` continues from the run folder's last checkpoint; ``--eval-only`` evaluates it.
Several GPUs: ``--num-gpus 8``; several machines: ``--num-machines``, ``--machine-rank`` and
``--dist-url`` as in detectron2's ``train_net.py``; without CUDA, ``--num-gpus N`` starts N CPU
processes joined with gloo (:func:`launch_cpu`). The settings of a run are one frozen
:class:`CocoDetConfig`.

CPU: the embedded default (ResNet-50, 150 iterations of 4 images, 500 test images) used 434 s of
CPU time (user + sys, one thread) on a 2-core CPU. On a CPU shared with other jobs set
``OMP_NUM_THREADS=1``: two threads under contention spent 3x the CPU time per iteration
(5.9 s against 1.9 s) and ran 3x slower.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transfer.compat  # noqa: F401,I001  (shims; before any detectron2 import)

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import get_norm
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads import Res5ROIHeads
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

from pretrain.backbones import RESNETS
from pretrain.files import atomic_write
from pretrain.cli import InputError, claim_output, keeping, number, one_line_errors, run_main
from pretrain.data import coco_files, validate_coco
from pretrain.open_backbone import Backbone, add_backbone_arguments, is_random, open_backbone
from transfer.compat import ZOO_PREFIX, UnsafeConfigError, detectron2_base
from transfer.convert import ConversionError, export_backbone, preview

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
C4_CONFIG = CONFIG_DIR / "coco_R_50_C4_1x_moco.yaml"
FULL_CONFIG = FPN_CONFIG = CONFIG_DIR / "coco_R_50_FPN_1x_moco.yaml"
CPU_CONFIG = CONFIG_DIR / "coco_cpu_FPN_128px.yaml"
# The most pixels a training batch may hold on a CPU unless the user opts in (MODEL.DEVICE cpu):
# the GPU recipe (16 images, up to 1333 px: 28M pixels) was killed by the kernel at about 22 GB
# on a CPU (issue 16), about 0.8 kB a pixel, so this cap keeps a batch near 3 GB. The CPU recipe
# holds 4 x 192^2 = 0.15M pixels.
CPU_BATCH_PIXELS = 2 ** 22
TRAIN_SET, TEST_SET = "suite_coco_train", "suite_coco_val"
SPLITS = {TRAIN_SET: "train", TEST_SET: "val"}
TASK, PROTOCOL = "coco_det", "finetune"
# the published recipes' names (a leaderboard row's recipe); any other config is named by its file
RECIPES = {"coco_R_50_C4_1x_moco": "R50-C4-1x", "coco_R_50_FPN_1x_moco": "R50-FPN-1x"}
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
RANDOM_ARCH = "resnet50"  # the random-init control's default here: the C4 configs need it
BACKBONE_FILE, BACKBONE_RECORD = "backbone_detectron2.pkl", "backbone.json"
METRICS_FILE, TRAIN_LOG = "metrics.json", "train_log.json"


class CocoDetError(InputError):
    """Bad input to the driver (data, config, run folder); the message says what and how."""


if "Res5ROIHeadsExtraNorm" not in ROI_HEADS_REGISTRY:  # this module may be imported twice
    @ROI_HEADS_REGISTRY.register()
    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        """Res5ROIHeads with an extra norm after res5: MoCo's C4 detection head
        (facebookresearch/moco, detection/train_net.py)."""

        def _build_res5_block(self, cfg: CfgNode) -> tuple[torch.nn.Module, int]:
            seq, out_channels = super()._build_res5_block(cfg)
            seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
            return seq, out_channels


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer scoring with COCOEvaluator (pure-Python pycocotools path)."""

    test_seconds = 0.0  # wall time of the last evaluation (inference + pycocotools)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str,
                        output_folder: str | None = None) -> COCOEvaluator:
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluator(dataset_name, tasks=tasks, distributed=True,
                             output_dir=output_folder or str(Path(cfg.OUTPUT_DIR) / "inference"),
                             use_fast_impl=False)

    def build_writers(self) -> list:
        """detectron2's default writers, its per-iteration JSON log renamed ``train_log.json``
        (detectron2 calls it metrics.json, the name of the suite's result file)."""
        return [CommonMetricPrinter(self.max_iter),
                JSONWriter(str(Path(self.cfg.OUTPUT_DIR) / TRAIN_LOG)),
                TensorboardXWriter(self.cfg.OUTPUT_DIR)]

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module, evaluators: Any = None) -> dict:
        start = time.perf_counter()
        results = super().test(cfg, model, evaluators)
        cls.test_seconds = time.perf_counter() - start
        return results


# ------------------------------------------------------------------------------------ config
def load_config(path: str | Path) -> CfgNode:
    """detectron2's default config merged with ``path`` and its ``_BASE_`` chain."""
    cfg = get_cfg()
    _merge_config(cfg, Path(path))
    return cfg


def _merge_config(cfg: CfgNode, path: Path) -> None:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CocoDetError(f"--config {path}: cannot be read as YAML "
                           f"({' '.join(str(err).split())})") from err
    if not isinstance(doc, dict):
        raise CocoDetError(f"--config {path}: expected a mapping of config keys")
    base = doc.pop("_BASE_", None)
    try:  # a base must lie in the model zoo or transfer/configs (transfer/compat.py)
        if base is not None and str(base).startswith(ZOO_PREFIX):
            cfg.merge_from_file(str(detectron2_base(base, path)))
        elif base is not None:
            _merge_config(cfg, detectron2_base(base, path))
    except UnsafeConfigError as err:
        raise CocoDetError(f"--config {err}") from err
    try:
        cfg.merge_from_other_cfg(CfgNode(doc))
    except (KeyError, ValueError, AssertionError) as err:
        raise CocoDetError(f"--config {path}: {err}") from err


# ------------------------------------------------------------------------------------ data
def register_data(data: Path, val_json: Path | None = None) -> None:
    """Register train2017 and val2017 (or ``val_json``, a subset of it) with detectron2."""
    for name in SPLITS:
        if name not in DatasetCatalog.list():
            json_file, image_root = coco_files(data, SPLITS[name])
            if name == TEST_SET and val_json is not None:
                json_file = val_json
            register_coco_instances(name, {}, str(json_file), str(image_root))


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


# ------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class CocoDetConfig:
    """One run's settings: detectron2's own flags (``default_argument_parser``) and the driver's,
    resolved once by :func:`parse_args` (config file, data root and run folder filled in) and
    never changed after."""

    weights: str | None
    prefix: str | None
    stride_in_1x1: bool | None
    arch: str | None
    stem: str | None
    seed: int
    config_file: Path | None  # None: :func:`default_config`, once the backbone's arch is known
    data: Path
    real_data: bool           # --data given (else the embedded synthetic set)
    out: Path
    val_images: int | None
    leaderboard: Path
    resume: bool
    eval_only: bool
    num_gpus: int
    num_machines: int
    machine_rank: int
    dist_url: str
    opts: tuple[str, ...]


# ------------------------------------------------------------------------------------ backbone
def prepare_backbone(settings: CocoDetConfig, backbone: Backbone, cfg: CfgNode) -> dict[str, Any]:
    """Convert ``backbone`` into the run folder, verified in the ResNet the run's resolved
    ``cfg`` builds; return the backbone record."""
    out = settings.out
    pkl = out / BACKBONE_FILE
    start = time.perf_counter()
    try:
        export_backbone(backbone, "detectron2", pkl, verify=True, engine_cfg=cfg)
    except ConversionError as err:
        resnets = cfg.MODEL.RESNETS
        raise ConversionError(f"{err} [verified with the run's config: MODEL.RESNETS.DEPTH "
                              f"{resnets.DEPTH}, STRIDE_IN_1X1 {resnets.STRIDE_IN_1X1}; the "
                              f"weights were trained with the stride in the "
                              f"{'1x1' if backbone.meta.get('stride_in_1x1') else '3x3'} conv]"
                              ) from err
    record = {"source": backbone.origin, "backbone_id_from_file": backbone.weights is not None,
              "converted": str(pkl), "convert_seconds": round(time.perf_counter() - start, 2),
              "meta": backbone.meta}
    atomic_write(out / BACKBONE_RECORD, lambda f: f.write(json.dumps(record, indent=2).encode()))
    return record


def default_config(arch: str, real_data: bool) -> Path:
    """The recipe when ``--config-file`` is not given: on real data with a GPU, MoCo's R50-C4 1x
    protocol for a ResNet-50 (MCR Table 5, SimSiam's and Barlow Twins' baselines) and R50-FPN 1x
    for ResNet-18/34 (C4 needs Bottleneck blocks); the CPU recipe on the embedded set or without
    a GPU."""
    if not real_data or not torch.cuda.is_available():
        return CPU_CONFIG
    return C4_CONFIG if RESNETS[arch].bottleneck else FPN_CONFIG


def check_cpu_recipe(cfg: CfgNode, settings: CocoDetConfig) -> None:
    """Refuse a GPU-sized recipe on a CPU (the kernel would kill it without a word), unless the
    overrides say ``MODEL.DEVICE cpu``."""
    if cfg.MODEL.DEVICE != "cpu" or "MODEL.DEVICE" in settings.opts[::2]:
        return
    pixels = cfg.SOLVER.IMS_PER_BATCH * cfg.INPUT.MAX_SIZE_TRAIN ** 2
    if pixels > CPU_BATCH_PIXELS:
        raise CocoDetError(
            f"--config-file {settings.config_file.name} is a GPU recipe ({cfg.SOLVER.IMS_PER_BATCH}"
            f" images a step at up to {cfg.INPUT.MAX_SIZE_TRAIN} px, tens of GB on a CPU) and "
            "this machine has no GPU: use the CPU recipe --config-file "
            f"transfer/configs/{CPU_CONFIG.name}, or add MODEL.DEVICE cpu to run it anyway")


def setup_cfg(settings: CocoDetConfig, record: dict[str, Any], num_classes: int) -> CfgNode:
    """The run's resolved config: the config file, the backbone's depth and stride convention
    (``record["meta"]``), then the ``KEY VALUE`` overrides; the conversion is verified with it."""
    cfg = load_config(settings.config_file)
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"  # before the overrides, which may still say otherwise
    arch = record["meta"]["arch"]
    cfg.MODEL.RESNETS.DEPTH = RESNETS[arch].depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = RESNETS[arch].res2_channels
    # the convention the weights were trained with (transfer/convert.py records it); an override
    # below that contradicts it fails the verification with this config
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = record["meta"].get("stride_in_1x1", False)
    try:
        cfg.merge_from_list(list(settings.opts))
    except (KeyError, ValueError, AssertionError) as err:
        raise CocoDetError(f"config overrides {' '.join(settings.opts)}: {err}") from err
    if cfg.MODEL.ROI_HEADS.NAME.startswith("Res5") and not RESNETS[arch].bottleneck:
        raise CocoDetError(f"{settings.config_file}: a C4 config builds res5 in the ROI head from "
                           f"Bottleneck blocks, so it needs a ResNet-50, not {arch}; "
                           f"use {FPN_CONFIG.name} (FPN) for ResNet-18/34")
    cfg.MODEL.WEIGHTS = record["converted"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (TRAIN_SET,), (TEST_SET,)
    cfg.OUTPUT_DIR = str(settings.out)
    cfg.SEED = settings.seed
    cfg.freeze()
    return cfg


# ------------------------------------------------------------------------------------ load guard
ENGINE_PREFIXES = ("backbone.bottom_up.", "backbone.", "roi_heads.")  # FPN, C4 res2-4, C4 res5


def loaded_file(checkpointer: DetectionCheckpointer, cfg: CfgNode, resume: bool) -> str:
    """The file ``checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)`` reads."""
    return (checkpointer.get_checkpoint_file() if resume and checkpointer.has_checkpoint()
            else cfg.MODEL.WEIGHTS)


def check_loaded(model: torch.nn.Module, path: str | Path) -> int:
    """Fail unless ``model`` holds every tensor of ``path`` as written: a converted backbone
    (its names under the backbone, or C4's res5 under ``roi_heads.``, found by this fixed rule,
    not by detectron2's matching heuristics) or a run's checkpoint (same names). detectron2 only
    logs what it did not load. Returns the number of tensors checked."""
    path = Path(path)
    data = DetectionCheckpointer(model)._load_file(str(path))
    written = data.get("model", data) if isinstance(data, dict) else {}
    state = model.state_dict()
    converted = path.name == BACKBONE_FILE
    wrong = []
    for name, value in written.items():
        if name.endswith("num_batches_tracked"):
            continue
        if converted:
            found = [prefix + name for prefix in ENGINE_PREFIXES if prefix + name in state]
            key = found[0] if len(found) == 1 else None
        else:
            key = name if name in state else None
        expected = torch.as_tensor(value)
        if key is None or state[key].shape != expected.shape or not torch.equal(
                state[key].detach().cpu(), expected.to(state[key].dtype)):
            wrong.append(key or name)
    if not written or wrong:
        raise CocoDetError(
            f"{path}: after detectron2 built and loaded the model, {len(wrong)} of its "
            f"{len(written)} tensors are not in the model as written: {preview(wrong, 8)} "
            "(detectron2 only logs this); check the file, the config and --resume")
    return len(written)


# ------------------------------------------------------------------------------------ run
def worker(settings: CocoDetConfig, record: dict[str, Any], num_classes: int,
           val_json: Path | None) -> None:
    """One process of the run (detectron2's ``launch`` starts one per GPU)."""
    register_data(settings.data, val_json)
    cfg = setup_cfg(settings, record, num_classes)
    # detectron2 logs these settings and the config file (as a str path), as from its own parser
    default_setup(cfg, argparse.Namespace(**{**asdict(settings),
                                             "config_file": str(settings.config_file)}))
    start = time.perf_counter()
    if settings.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=True)
        check_loaded(model, loaded_file(checkpointer, cfg, resume=True))
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=settings.resume)
        check_loaded(trainer.checkpointer.model,
                     loaded_file(trainer.checkpointer, cfg, settings.resume))
        trainer.train()  # ends with the EvalHook's evaluation
        results = getattr(trainer, "_last_eval_results", {})
    if comm.is_main_process():
        elapsed = time.perf_counter() - start
        write_outputs(settings, cfg, record, results, elapsed - Trainer.test_seconds,
                      Trainer.test_seconds)


def write_outputs(settings: CocoDetConfig, cfg: CfgNode, record: dict[str, Any],
                  results: dict[str, dict[str, float]], train_seconds: float,
                  eval_seconds: float) -> dict[str, Any]:
    from benchmarks.results.leaderboard import (
        backbone_fields,
        embedded_data,
        run_identity,
        write_rows,
    )

    if not results:
        raise CocoDetError("detectron2 returned no evaluation results (TEST.EVAL_PERIOD and "
                           "DATASETS.TEST must allow a final evaluation)")
    metrics = {task: {k: (None if math.isnan(v) else v) for k, v in values.items()}
               for task, values in results.items()}
    summary = {"metrics": metrics, "iterations": cfg.SOLVER.MAX_ITER,
               "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
               "convert_seconds": record.get("convert_seconds"), "config": "config.yaml",
               "weights": record["source"], "data": str(settings.data), "seed": settings.seed,
               "val_images": settings.val_images or "all"}
    out = Path(cfg.OUTPUT_DIR)
    atomic_write(out / METRICS_FILE, lambda f: f.write(json.dumps(summary, indent=2).encode()))
    meta = record["meta"]
    fields = backbone_fields(record["source"] if record["backbone_id_from_file"] else None, meta)
    overrides = dict(zip(settings.opts[::2], settings.opts[1::2]))
    stem = settings.config_file.stem
    identity = run_identity(RECIPES.get(stem, stem), {
        "data": "synthetic" if embedded_data(settings.data) else None,
        "val_images": settings.val_images, "iterations": overrides.pop("SOLVER.MAX_ITER", None),
        **overrides}, published=stem in RECIPES)
    rows = [{**fields, "task": TASK, "protocol": PROTOCOL, **identity, "metric": f"{task}_{name}",
             "value": metrics[task][name], "seed": settings.seed}
            for task in metrics for name in METRICS if metrics[task].get(name) is not None]
    if not rows:  # pycocotools' -1 (detectron2's NaN): no detection to score at all
        raise CocoDetError(
            f"the model made no detection above MODEL.ROI_HEADS.SCORE_THRESH_TEST="
            f"{cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST} on the val images, so COCO AP is undefined "
            f"and no leaderboard row was written ({out / METRICS_FILE} holds the NaNs); train "
            "longer (SOLVER.MAX_ITER) or evaluate again with --eval-only --opts "
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0")
    with keeping(out / METRICS_FILE):
        write_rows(settings.leaderboard, rows)
    return summary


def run(settings: CocoDetConfig) -> dict[str, Any]:
    """Check the data, resolve the config, convert the weights (verified with that config), then
    train and evaluate on every process (``launch``); returns metrics.json's content (on the
    first machine)."""
    out, data = settings.out, settings.data
    masks = "MODEL.MASK_ON" in settings.opts or (  # every default recipe has masks
        settings.config_file is None or load_config(settings.config_file).MODEL.MASK_ON)
    categories = [sorted(c["id"] for c in validate_coco(*coco_files(data, split),
                                                        masks=masks)["categories"])
                  for split in SPLITS.values()]
    if categories[0] != categories[1]:
        raise CocoDetError(f"{data}: train and val list different categories "
                           f"({categories[0]} vs {categories[1]})")
    has_checkpoint = (out / "last_checkpoint").is_file()
    backbone = None
    if settings.eval_only or settings.resume:
        if not has_checkpoint:
            raise CocoDetError(f"--out {out}: no detectron2 checkpoint (last_checkpoint) to "
                               f"{'evaluate' if settings.eval_only else 'resume'}")
        claim_output(out, COMMAND, own=_earlier_run)
        record = json.loads((out / BACKBONE_RECORD).read_text())
    else:
        if has_checkpoint:
            raise CocoDetError(f"--out {out}: already holds a run (last_checkpoint); pass "
                               "--resume to continue it, --eval-only to evaluate it, or another "
                               "--out")
        backbone = open_backbone(settings.weights, settings.arch, settings.stem, settings.seed,
                                 settings.prefix, settings.stride_in_1x1)
        record = {"meta": backbone.meta, "converted": str(out / BACKBONE_FILE)}
    if settings.config_file is None:
        chosen = default_config(record["meta"]["arch"], settings.real_data)
        settings = replace(settings, config_file=chosen)
        if chosen == CPU_CONFIG and settings.real_data:
            print(f"no GPU: the CPU recipe transfer/configs/{CPU_CONFIG.name} (the published one "
                  f"is --config-file transfer/configs/{C4_CONFIG.name}, on GPUs)", flush=True)
    cfg = setup_cfg(settings, record, len(categories[0]))
    check_cpu_recipe(cfg, settings)
    if backbone is not None:
        claim_output(out, COMMAND, own=_earlier_run)
        record = prepare_backbone(settings, backbone, cfg)
    val_json = val_subset(data, out, settings.val_images) if settings.val_images else None
    start = launch if torch.cuda.is_available() else launch_cpu
    start(worker, settings.num_gpus, num_machines=settings.num_machines,
          machine_rank=settings.machine_rank, dist_url=settings.dist_url,
          args=(settings, record, len(categories[0]), val_json))
    return json.loads((out / METRICS_FILE).read_text()) if settings.machine_rank == 0 else {}


def launch_cpu(main_func: Any, num_gpus_per_machine: int, num_machines: int = 1,
               machine_rank: int = 0, dist_url: str = "auto", args: tuple = ()) -> None:
    """detectron2's ``launch`` for a machine without CUDA (its own asserts CUDA and uses NCCL):
    ``num_gpus_per_machine`` processes joined with gloo, each ``main_func(*args)``. For tests of
    the multi-process path on CPUs."""
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url == "auto":
        from detectron2.engine.launch import _find_free_port

        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    torch.multiprocessing.start_processes(
        _cpu_worker, nprocs=num_gpus_per_machine, start_method="spawn", daemon=False,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args))


def _cpu_worker(local_rank: int, main_func: Any, world_size: int, num_gpus_per_machine: int,
                machine_rank: int, dist_url: str, args: tuple) -> None:
    """detectron2's ``_distributed_worker`` with gloo and no device: the process group, the
    machine's local group, and DDP without ``device_ids`` (torch refuses them for CPU modules)."""
    import torch.distributed as dist
    from detectron2.engine import defaults

    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size,
                            rank=machine_rank * num_gpus_per_machine + local_rank)
    for machine in range(world_size // num_gpus_per_machine):
        group = dist.new_group(list(range(machine * num_gpus_per_machine,
                                          (machine + 1) * num_gpus_per_machine)))
        if machine == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    create_ddp_model = defaults.create_ddp_model
    defaults.create_ddp_model = lambda model, **kwargs: create_ddp_model(
        model, **{**kwargs, "device_ids": None})
    comm.synchronize()
    main_func(*args)


COMMAND = "transfer/coco_det.py"


def _earlier_run(folder: Path) -> bool:
    """A run folder of this driver made before folders were marked: it has the backbone record."""
    return (folder / BACKBONE_RECORD).is_file()


def build_parser() -> argparse.ArgumentParser:
    """detectron2's ``default_argument_parser`` with the driver's flags added."""
    from benchmarks.results.leaderboard import DEFAULT_PATH

    p = default_argument_parser(epilog=f"--config-file (in transfer/configs/) defaults to "
                                f"{C4_CONFIG.name} for a ResNet-50 and {FPN_CONFIG.name} for "
                                f"ResNet-18/34 with --data on a GPU, else {CPU_CONFIG.name}. "
                                "Config overrides KEY VALUE ... come last.")
    p.prog, p.description = "python transfer/coco_det.py", __doc__.split("\n\n")[0]
    one_line_errors(p)
    for action in p._actions:  # detectron2's launcher flags: a count of at least 1, a rank >= 0
        if action.dest in ("num_gpus", "num_machines", "machine_rank"):
            action.type = number(int, 0 if action.dest == "machine_rank" else 1)
    p.set_defaults(dist_url="auto")  # a free port: two runs on one machine must not collide
    add_backbone_arguments(p, random_arch=RANDOM_ARCH,
                           weights_help=" (required unless --resume or --eval-only)")
    p.add_argument("--data", type=Path, default=None,
                   help="COCO root (annotations/instances_{train,val}2017.json, train2017/, "
                        "val2017/); default: the embedded synthetic set")
    p.add_argument("--out", type=Path, default=None, help="run folder")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the run (and of the random-init control)")
    p.add_argument("--val-images", type=number(), default=None, metavar="N",
                   help="evaluate on the first N val2017 images only (a quick check; the "
                        "protocol evaluates all)")
    p.add_argument("--leaderboard", type=Path, default=DEFAULT_PATH, help="leaderboard CSV")
    return p


def parse_args(argv: list[str] | None = None) -> CocoDetConfig:
    """The command line, checked and resolved into the run's :class:`CocoDetConfig`."""
    p = build_parser()
    args = p.parse_args(argv)
    opts = tuple(args.opts or ())
    if args.weights is None and not (args.resume or args.eval_only):
        p.error("--weights is required (a backbone file, or 'random')")
    if len(opts) % 2:
        p.error(f"config overrides come as KEY VALUE pairs; got {' '.join(opts)}")
    config_file = Path(args.config_file) if args.config_file else None
    data = args.data
    if data is None:
        from pretrain.synthetic import default_root

        data = default_root() / "coco"
    name = Path(args.weights).stem if args.weights else "run"
    recipe = config_file.stem if config_file else "default"
    return CocoDetConfig(**{
        **vars(args), "opts": opts, "config_file": config_file, "data": data,
        "real_data": args.data is not None,
        "arch": args.arch or (RANDOM_ARCH if is_random(args.weights) else None),
        "out": args.out or Path("runs/coco_det") / f"{name}-{recipe}-seed{args.seed}"})


def main(argv: list[str] | None = None) -> int:
    def train_and_score() -> None:
        settings = parse_args(argv)  # inside: making the default data may fail (a full disk)
        summary = run(settings)
        if summary:
            print(json.dumps({k: summary[k] for k in ("metrics", "train_seconds", "eval_seconds",
                                                     "convert_seconds")}, indent=2))
            print(f"run folder: {settings.out}")

    from benchmarks.results.leaderboard import LeaderboardError

    return run_main(train_and_score, statuses={LeaderboardError: 2})


if __name__ == "__main__":
    sys.exit(main())
