"""What the suite's detectron2 drivers share (``coco_det.py``, ``voc_det.py``, ``semseg.py``).

Everything that trains and scores is detectron2's own: ``DefaultTrainer`` (its loop, hooks,
checkpoints, TensorBoard and log), its data loading, its evaluators, ``launch`` for several GPUs
or machines, and its command line (``default_argument_parser``: ``--config-file``,
``--resume``, ``--eval-only``, the launcher's flags and ``KEY VALUE`` overrides at the end; the
suite's ``--gpus`` is ``--num-gpus``). A driver is one :class:`SuiteTrainer` subclass: its task,
recipes, data check and registration, evaluator and leaderboard metrics. This module adds, once:

- the backbone: ``--weights`` is opened by ``pretrain/open_backbone.py`` (any checkpoint format it
  reads, or ``random``), converted into the run folder (``backbone_detectron2.pkl``) and verified
  against detectron2's own ResNet built with the run's resolved config (``transfer/convert.py``)
  before detectron2 sees it; the depth follows the weights and C4 needs a ResNet-50.
- configs (``transfer/detectron2_setup.py``: ``_BASE_`` chains through detectron2's model zoo
  and ``transfer/configs``, read with ``yaml.safe_load``). A recipe whose training batch holds
  more than :data:`CPU_BATCH_PIXELS` pixels is refused on a CPU in one line naming the driver's
  CPU recipe.
- the load guard: after detectron2 has built and loaded the model, every tensor of the file it read
  must be in the model as written (``detectron2_setup.check_loaded``; detectron2 only logs them).
- run folders: ``--resume`` continues the folder's last checkpoint, ``--eval-only`` evaluates it;
  a folder holding a run is never overwritten. Without CUDA, ``--gpus N`` starts N CPU processes
  joined with gloo (``transfer/detectron2_launch.py``).
- outputs: ``config.yaml``, ``log.txt``, TensorBoard events and ``train_log.json`` (detectron2's
  scalars), ``model_final.pth``, ``backbone.json`` (where the backbone came from),
  ``metrics.json`` and the leaderboard rows (recipe, budget and deviations from
  ``benchmarks.results.leaderboard.run_identity``).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

# isort: off
from transfer.detectron2_setup import (BACKBONE_FILE, DriverError, check_loaded, load_config,
                                       loaded_file)
# isort: on

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

from pretrain.backbones import RESNETS
from pretrain.cli import claim_output, keeping, number, one_line_errors
from pretrain.distributed import PROCESS_COUNT
from pretrain.files import atomic_write
from pretrain.open_backbone import Backbone, add_backbone_arguments, is_random, open_backbone
from transfer.convert import ConversionError, export_backbone
from transfer.detectron2_launch import launch_any

# The most pixels a training batch may hold on a CPU unless the user opts in (MODEL.DEVICE cpu):
# the GPU recipe (16 images, up to 1333 px: 28M pixels) was killed by the kernel at about 22 GB
# on a CPU (issue 16), about 0.8 kB a pixel, so this cap keeps a batch near 3 GB.
CPU_BATCH_PIXELS = 2 ** 22
RANDOM_ARCH = "resnet50"  # the random-init control's default: the C4 configs need it
BACKBONE_RECORD, METRICS_FILE, TRAIN_LOG = "backbone.json", "metrics.json", "train_log.json"


# ------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class DriverSettings:
    """One run's settings: detectron2's own flags (``default_argument_parser``) and the driver's,
    resolved once by :func:`parse_settings` and never changed after."""

    weights: str | None
    backbone_name: str | None  # --backbone-name: the leaderboard's name of a named checkpoint
    prefix: str | None
    stride_in_1x1: bool | None
    arch: str | None
    stem: str | None
    seed: int
    config_file: Path | None  # None: the driver's default, once the backbone's arch is known
    data: Path
    real_data: bool           # --data given (else the embedded synthetic set)
    out: Path
    leaderboard: Path
    resume: bool
    eval_only: bool
    num_gpus: int
    num_machines: int
    machine_rank: int
    dist_url: str
    opts: tuple[str, ...]


class SuiteTrainer(DefaultTrainer):
    """detectron2's DefaultTrainer with the suite's writers and timing; a driver subclasses it
    with its task (the hooks below) and its evaluator (``build_evaluator``)."""

    TASK: str = ""
    COMMAND: str = ""               # the script, which owns its run folders
    PROTOCOL = "finetune"
    RECIPES: dict[str, str] = {}   # published config file stem -> recipe name
    CPU_CONFIG: Path
    METRIC_NAMES: tuple[str, ...] = ()
    test_seconds = 0.0  # wall time of the last evaluation

    # ---- the driver's hooks
    @classmethod
    def default_config(cls, arch: str, real_data: bool) -> Path:
        raise NotImplementedError

    @classmethod
    def check_data(cls, settings: DriverSettings) -> dict[str, Any]:
        """Validate the data before anything runs; what the other hooks need (picklable)."""
        raise NotImplementedError

    @classmethod
    def prepare_data(cls, settings: DriverSettings, info: dict[str, Any]) -> dict[str, Any]:
        """Once the run folder is claimed, on the first machine: anything written into it."""
        return info

    @classmethod
    def register_data(cls, settings: DriverSettings, info: dict[str, Any]) -> None:
        """Register the data sets with detectron2 (in every process)."""
        raise NotImplementedError

    @classmethod
    def configure(cls, cfg: CfgNode, info: dict[str, Any]) -> None:
        """Set the data sets and the number of classes in ``cfg``."""
        raise NotImplementedError

    @classmethod
    def metric_rows(cls, metrics: dict[str, dict[str, float | None]]) -> list[tuple[str, float]]:
        """(leaderboard metric, value) of the defined results."""
        return [(f"{group}_{name}", value) for group, values in metrics.items()
                for name in cls.METRIC_NAMES if (value := values.get(name)) is not None]

    @classmethod
    def deviations(cls, settings: DriverSettings) -> dict[str, Any]:
        """Settings beside the overrides that make a run deviate from its recipe."""
        return {}

    # ---- detectron2's
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

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str,
                        output_folder: str | None = None) -> DatasetEvaluator:
        raise NotImplementedError


# ------------------------------------------------------------------------------------ backbone
def prepare_backbone(settings: DriverSettings, backbone: Backbone, cfg: CfgNode) -> dict[str, Any]:
    """Convert ``backbone`` into the run folder, verified in the ResNet the run's resolved
    ``cfg`` builds; return the backbone record."""
    pkl = settings.out / BACKBONE_FILE
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
    atomic_write(settings.out / BACKBONE_RECORD,
                 lambda f: f.write(json.dumps(record, indent=2).encode()))
    return record


def check_cpu_recipe(trainer: type[SuiteTrainer], cfg: CfgNode, settings: DriverSettings) -> None:
    """Refuse a GPU-sized recipe on a CPU (the kernel would kill it without a word), unless the
    overrides say ``MODEL.DEVICE cpu``."""
    if cfg.MODEL.DEVICE != "cpu" or "MODEL.DEVICE" in settings.opts[::2]:
        return
    if cfg.SOLVER.IMS_PER_BATCH * cfg.INPUT.MAX_SIZE_TRAIN ** 2 > CPU_BATCH_PIXELS:
        raise DriverError(
            f"--config-file {settings.config_file.name} is a GPU recipe ({cfg.SOLVER.IMS_PER_BATCH}"
            f" images a step at up to {cfg.INPUT.MAX_SIZE_TRAIN} px, tens of GB on a CPU) and "
            "this machine has no GPU: use the CPU recipe --config-file "
            f"transfer/configs/{trainer.CPU_CONFIG.name}, or add MODEL.DEVICE cpu to run it anyway")


def setup_cfg(trainer: type[SuiteTrainer], settings: DriverSettings, record: dict[str, Any],
              info: dict[str, Any]) -> CfgNode:
    """The run's resolved config: the config file, the backbone's depth and stride convention
    (``record["meta"]``), then the ``KEY VALUE`` overrides, then the data; the conversion is
    verified with it."""
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
        raise DriverError(f"config overrides {' '.join(settings.opts)}: {err}") from err
    if cfg.MODEL.ROI_HEADS.NAME.startswith("Res5") and not RESNETS[arch].bottleneck:
        raise DriverError(f"{settings.config_file}: a C4 config builds res5 in the ROI head from "
                          f"Bottleneck blocks, so it needs a ResNet-50, not {arch}; use an FPN "
                          f"config for ResNet-18/34 (such as {trainer.CPU_CONFIG.name})")
    cfg.MODEL.WEIGHTS = record["converted"]
    trainer.configure(cfg, info)
    cfg.OUTPUT_DIR = str(settings.out)
    cfg.SEED = settings.seed
    cfg.freeze()
    return cfg


# ------------------------------------------------------------------------------------ run
def worker(trainer: type[SuiteTrainer], settings: DriverSettings, record: dict[str, Any],
           info: dict[str, Any]) -> None:
    """One process of the run (detectron2's ``launch`` starts one per GPU)."""
    trainer.register_data(settings, info)
    cfg = setup_cfg(trainer, settings, record, info)
    # detectron2 logs these settings and the config file (as a str path), as from its own parser
    default_setup(cfg, argparse.Namespace(**{**asdict(settings),
                                             "config_file": str(settings.config_file)}))
    start = time.perf_counter()
    if settings.eval_only:
        model = trainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=True)
        check_loaded(model, loaded_file(checkpointer, cfg, resume=True))
        results = trainer.test(cfg, model)
    else:
        run = trainer(cfg)
        run.resume_or_load(resume=settings.resume)
        check_loaded(run.checkpointer.model, loaded_file(run.checkpointer, cfg, settings.resume))
        run.train()  # ends with the EvalHook's evaluation
        results = getattr(run, "_last_eval_results", {})
    if comm.is_main_process():
        elapsed = time.perf_counter() - start
        write_outputs(trainer, settings, cfg, record, results, elapsed - trainer.test_seconds,
                      trainer.test_seconds)


def write_outputs(trainer: type[SuiteTrainer], settings: DriverSettings, cfg: CfgNode,
                  record: dict[str, Any], results: dict[str, dict[str, float]],
                  train_seconds: float, eval_seconds: float) -> dict[str, Any]:
    """``metrics.json`` (kept even if the leaderboard refuses the rows) and the rows."""
    from benchmarks.results.leaderboard import (
        backbone_fields,
        embedded_data,
        run_identity,
        write_rows,
    )

    if not results:
        raise DriverError("detectron2 returned no evaluation results (TEST.EVAL_PERIOD and "
                          "DATASETS.TEST must allow a final evaluation)")
    metrics = {group: {k: (None if isinstance(v, float) and math.isnan(v) else v)
                       for k, v in values.items()} for group, values in results.items()}
    summary = {"metrics": metrics, "iterations": cfg.SOLVER.MAX_ITER,
               "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
               "convert_seconds": record.get("convert_seconds"), "config": "config.yaml",
               "weights": record["source"], "data": str(settings.data), "seed": settings.seed,
               **trainer.deviations(settings)}
    out = Path(cfg.OUTPUT_DIR)
    atomic_write(out / METRICS_FILE, lambda f: f.write(json.dumps(summary, indent=2).encode()))
    fields = backbone_fields(record["source"] if record["backbone_id_from_file"] else None,
                             record["meta"], name=settings.backbone_name)
    overrides = dict(zip(settings.opts[::2], settings.opts[1::2]))
    stem = settings.config_file.stem
    identity = run_identity(trainer.RECIPES.get(stem, stem), {
        "data": "synthetic" if embedded_data(settings.data) else None,
        **trainer.deviations(settings), "iterations": overrides.pop("SOLVER.MAX_ITER", None),
        **overrides}, published=stem in trainer.RECIPES)
    rows = [{**fields, "task": trainer.TASK, "protocol": trainer.PROTOCOL, **identity,
             "metric": metric, "value": value, "seed": settings.seed}
            for metric, value in trainer.metric_rows(metrics)]
    if not rows:  # e.g. pycocotools' -1 (detectron2's NaN): no detection to score at all
        raise DriverError(
            f"the model made no detection above MODEL.ROI_HEADS.SCORE_THRESH_TEST="
            f"{cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST} on the test images, so the metrics are "
            f"undefined and no leaderboard row was written ({out / METRICS_FILE} holds the "
            "NaNs); train longer (SOLVER.MAX_ITER) or evaluate again with --eval-only "
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0")
    with keeping(out / METRICS_FILE):
        write_rows(settings.leaderboard, rows)
    return summary


def run(trainer: type[SuiteTrainer], settings: DriverSettings) -> dict[str, Any]:
    """Check the data, resolve the config, convert the weights (verified with that config), then
    train and evaluate on every process; returns metrics.json's content (on the first
    machine)."""
    out = settings.out
    info = trainer.check_data(settings)
    has_checkpoint = (out / "last_checkpoint").is_file()
    backbone = None
    own = _earlier_run
    if settings.eval_only or settings.resume:
        if not has_checkpoint:
            raise DriverError(f"--out {out}: no detectron2 checkpoint (last_checkpoint) to "
                              f"{'evaluate' if settings.eval_only else 'resume'}")
        claim_output(out, trainer.COMMAND, own=own)
        record = json.loads((out / BACKBONE_RECORD).read_text())
    else:
        if has_checkpoint:
            raise DriverError(f"--out {out}: already holds a run (last_checkpoint); pass "
                              "--resume to continue it, --eval-only to evaluate it, or another "
                              "--out")
        backbone = open_backbone(settings.weights, settings.arch, settings.stem, settings.seed,
                                 settings.prefix, settings.stride_in_1x1)
        record = {"meta": backbone.meta, "converted": str(out / BACKBONE_FILE)}
    if settings.config_file is None:
        chosen = trainer.default_config(record["meta"]["arch"], settings.real_data)
        settings = replace(settings, config_file=chosen)
        if chosen == trainer.CPU_CONFIG and settings.real_data:
            print(f"no GPU: the CPU recipe transfer/configs/{chosen.name} (the published ones "
                  "run on GPUs)", flush=True)
    cfg = setup_cfg(trainer, settings, record, info)
    check_cpu_recipe(trainer, cfg, settings)
    if backbone is not None:
        claim_output(out, trainer.COMMAND, own=own)
        record = prepare_backbone(settings, backbone, cfg)
    info = trainer.prepare_data(settings, info)
    launch_any(worker, settings.num_gpus, num_machines=settings.num_machines,
               machine_rank=settings.machine_rank, dist_url=settings.dist_url,
               args=(trainer, settings, record, info))
    return json.loads((out / METRICS_FILE).read_text()) if settings.machine_rank == 0 else {}


def _earlier_run(folder: Path) -> bool:
    """A run folder made before folders were marked: it has the backbone record."""
    return (folder / BACKBONE_RECORD).is_file()


# ------------------------------------------------------------------------------------ command line
def build_parser(prog: str, description: str, epilog: str, data_help: str
                 ) -> argparse.ArgumentParser:
    """detectron2's ``default_argument_parser`` with the flags every driver adds."""
    from benchmarks.results.leaderboard import DEFAULT_PATH

    p = default_argument_parser(epilog=epilog)
    p.prog, p.description = prog, description
    one_line_errors(p)
    for action in p._actions:  # detectron2's launcher flags: a count of at least 1, a rank >= 0
        if action.dest in ("num_gpus", "num_machines", "machine_rank"):
            action.type = PROCESS_COUNT if action.dest == "num_gpus" else number(
                int, 0 if action.dest == "machine_rank" else 1)
        if action.dest == "num_gpus":  # the suite's name; detectron2's stays as its alias
            action.option_strings.append("--gpus")
            p._option_string_actions["--gpus"] = action
    p.set_defaults(dist_url="auto")  # a free port: two runs on one machine must not collide
    add_backbone_arguments(p, random_arch=RANDOM_ARCH,
                           weights_help=" (required unless --resume or --eval-only)")
    p.add_argument("--data", type=Path, default=None, help=data_help)
    p.add_argument("--out", type=Path, default=None, help="run folder")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the run (and of the random-init control)")
    p.add_argument("--leaderboard", type=Path, default=DEFAULT_PATH, help="leaderboard CSV")
    return p


def parse_settings(p: argparse.ArgumentParser, argv: list[str] | None, settings: type,
                   task: str, default_data: str) -> Any:
    """The command line, checked and resolved into the run's frozen ``settings`` (a
    :class:`DriverSettings` subclass); ``default_data`` is the embedded set's folder."""
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

        data = default_root() / default_data
    name = Path(args.weights).stem if args.weights else "run"
    recipe = config_file.stem if config_file else "default"
    return settings(**{
        **vars(args), "opts": opts, "config_file": config_file, "data": data,
        "real_data": args.data is not None,
        "arch": args.arch or (RANDOM_ARCH if is_random(args.weights) else None),
        "out": args.out or Path("runs") / task / f"{name}-{recipe}-seed{args.seed}"})
