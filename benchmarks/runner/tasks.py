"""The suite's table of tasks: one entry per task, read by the suite runner's plan, its
``--tasks`` list and its report.

An entry names the leaderboard task, the script that runs it (the suite starts it as the command a
user would type), the protocols the suite runs (one stage each), and the data layout it reads: a
key of :data:`pretrain.data.LAYOUTS` (its reader, which checks a root: :attr:`SuiteTask.reader`)
and of :data:`pretrain.synthetic.GENERATORS` (its generator, which writes the embedded default the
suite uses for every layout given no ``--data``). Readers and generators are registered per
layout, not per task, because several tasks share one layout (COCO) and pretraining, which may not
import this module, reads the same layouts. The flags each suite budget adds, the engine's small
config for the embedded set are the task's too; the shortcut gap its rows show is in
:data:`benchmarks.results.gaps.GAPS` (the torch-free results read it, and never this table).

Adding a task: its script, its entry here (and its gap, if any), its test.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.data import LAYOUTS

# Flags per suite budget and protocol. "cpu" sizes every stage so that the README's main job
# takes at most 20 minutes on 2 cores at 63 images/s (benchmarks/runner/plan.py): every
# stage runs for real, but far too briefly for its numbers to rank backbones. Detections of any
# score: 10 iterations leave none above detectron2's 0.05, and COCO AP undefined. "full" is
# each engine's own protocol (hours on GPUs).
Budgets = Mapping[str, Mapping[str, tuple[str, ...]]]
# Pretraining epochs per data set under --budget full with --pretrain-per-task: RCL (Making
# Contrastive Learning Robust to Shortcuts) pretrains on each task's own data, MPII 300 epochs,
# FairFace 1000, Colorful-MNIST 200 (its appendix; issue 16). COCO has no such figure: the
# budget's default length.
PRETRAIN_EPOCHS = {"mpii": 300, "fairface": 1000, "colorful_mnist": 200}
PROBE_FINETUNE: Budgets = {"cpu": {"finetune": ("--epochs", "0.25")},
                           "smoke": {"finetune": ("--epochs", "0.05")}}


@dataclass(frozen=True)
class SuiteTask:
    name: str                          # the leaderboard's task
    module: str                        # its command: python -m MODULE (a console script too)
    protocols: tuple[str, ...]         # one suite stage per protocol (the script's --protocol)
    data: str                          # data key: --data KEY=ROOT, layout and embedded set
    budgets: Budgets = field(default_factory=dict)   # extra flags per budget and protocol
    stage: str = ""                    # prefix of its stage names (default: name)
    synthetic_flags: tuple[str, ...] = ()   # for the embedded set (an engine's small config)
    gpus_flag: str = ""                # its flag for GPUs per stage, if it takes several
    full_arch: str = ""                # the arch its published protocol needs (--budget full)
    # Protocols whose stage, below the full budget, only proves that its path works (a few
    # iterations of an engine, a fraction of an epoch of fine-tuning: numbers that cannot rank
    # backbones), so it runs on one backbone: the panel's first (else the first --checkpoint,
    # else the random-init control). Every other stage runs on every backbone.
    path_checks: tuple[str, ...] = ()

    @property
    def reader(self) -> Callable[[Path], Path]:
        """Checks a root of the task's data layout (:class:`pretrain.data.DataError`)."""
        return LAYOUTS[self.data].check

    def stages(self) -> dict[str, str]:
        """{suite stage name: protocol}; a task with one protocol is one stage of its name."""
        prefix = self.stage or self.name
        if len(self.protocols) == 1:
            return {prefix: self.protocols[0]}
        return {f"{prefix}_{protocol}": protocol for protocol in self.protocols}

    def protocol_flags(self, protocol: str) -> list[str]:
        """How its script is told the protocol (nothing for a script of one protocol)."""
        return ["--protocol", protocol] if len(self.protocols) > 1 else []

    def budget_flags(self, budget: str, protocol: str) -> list[str]:
        """What ``budget`` adds to the stage of ``protocol`` (the suite puts these last: an
        engine's config overrides, detectron2's ``KEY VALUE`` pairs, end the command line)."""
        return list(self.budgets.get(budget, {}).get(protocol, ()))


TASKS = {task.name: task for task in (
    SuiteTask("coco_det", "transfer.coco_det", ("finetune",), "coco",
              budgets={"cpu": {"finetune": (
                           "--val-images", "20", "SOLVER.MAX_ITER", "10",
                           "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")},
                       "smoke": {"finetune": (
                           "--val-images", "4", "SOLVER.MAX_ITER", "2",
                           "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")},
                       # MCR Table 5 (SimSiam's, Barlow Twins' baselines): MoCo's R50-C4 1x
                       "full": {"finetune": (
                           "--config-file", "transfer/configs/coco_R_50_C4_1x_moco.yaml")}},
              synthetic_flags=("--config-file", "transfer/configs/coco_cpu_FPN_128px.yaml"),
              gpus_flag="--gpus", full_arch="resnet50", path_checks=("finetune",)),
    SuiteTask("voc_det", "transfer.voc_det", ("finetune",), "voc",
              budgets={"cpu": {"finetune": (
                           "SOLVER.MAX_ITER", "10", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")},
                       "smoke": {"finetune": (
                           "SOLVER.MAX_ITER", "2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")},
                       # MoCo's VOC protocol: R50-C4, 24k iterations, means of 5 trials
                       "full": {"finetune": (
                           "--config-file", "transfer/configs/pascal_voc_R_50_C4_24k_moco.yaml",
                           "--trials", "5")}},
              synthetic_flags=("--config-file", "transfer/configs/voc_cpu_FPN_128px.yaml"),
              gpus_flag="--gpus", full_arch="resnet50", path_checks=("finetune",)),
    SuiteTask("semseg", "transfer.semseg", ("finetune",), "voc",
              budgets={"cpu": {"finetune": ("SOLVER.MAX_ITER", "10")},
                       "smoke": {"finetune": ("SOLVER.MAX_ITER", "2")},
                       "full": {"finetune": (
                           "--config-file", "transfer/configs/voc_semseg_R_50_FPN_1x_moco.yaml")}},
              synthetic_flags=("--config-file", "transfer/configs/voc_semseg_cpu_FPN_128px.yaml"),
              gpus_flag="--gpus", path_checks=("finetune",)),
    SuiteTask("mpii_pose", "transfer.mpii_pose", ("fixed", "finetune"), "mpii", stage="mpii",
              budgets={"cpu": dict.fromkeys(("fixed", "finetune"), (
                           "--max-iters", "20", "--batch-size", "16", "--val-images", "64")),
                       "smoke": dict.fromkeys(("fixed", "finetune"), (
                           "--max-iters", "2", "--val-images", "8"))},
              synthetic_flags=("--config", "transfer/configs/mpii_cpu_128x128.py"),
              gpus_flag="--gpus", full_arch="resnet50", path_checks=("fixed", "finetune")),
    SuiteTask("fairface", "benchmarks.probes.fairface", ("fixed", "finetune"), "fairface",
              budgets=PROBE_FINETUNE, full_arch="resnet50", path_checks=("finetune",)),
    SuiteTask("colorful_mnist", "benchmarks.probes.colorful_mnist", ("fixed", "finetune"),
              "colorful_mnist", budgets=PROBE_FINETUNE, path_checks=("finetune",)),
    SuiteTask("coco_fgbg", "benchmarks.probes.coco_fgbg", ("fixed",), "coco",
              budgets={"cpu": {"fixed": ("--image-size", "64")},
                       "smoke": {"fixed": ("--image-size", "32")}},
              path_checks=("fixed",)),
)}


def suite_stages() -> dict[str, tuple[SuiteTask, str]]:
    """{stage name: (task, protocol)} of every task, in the table's order: the suite's
    ``--tasks`` choices."""
    return {stage: (task, protocol) for task in TASKS.values()
            for stage, protocol in task.stages().items()}


def data_sets() -> tuple[str, ...]:
    """The data keys the table's tasks read (the suite's ``--data`` sets), in order."""
    return tuple(dict.fromkeys(task.data for task in TASKS.values()))

