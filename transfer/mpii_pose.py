"""MPII pose transfer: mmpose's SimpleBaseline on a suite backbone, scored by PCKh.

    ssl-mpii-pose --weights FILE [--protocol fixed|finetune] [--data MPII_ROOT] [--out RUN_FOLDER]
                  [--config CONFIG] [--cfg-options KEY=VALUE ...] [--gpus N] [--max-iters N]
                  [--leaderboard CSV] [--resume | --eval-only]

(``ssl-mpii-pose`` is the console script; ``python -m transfer.mpii_pose`` is the same command.)

Everything that trains and scores is mmpose's own: mmengine's Runner, ``MpiiDataset`` with the
head boxes (``headbox_file``), the top-down SimpleBaseline (mmpose ResNet + ``HeatmapHead`` with
three deconvolutions), flip test and ``MpiiPCKAccuracy`` (PCKh@0.5 per joint group and mean,
PCKh@0.1). The config is ``transfer/configs/mpii_td-hm_res50_256x256.py`` (mmpose's
``td-hm_res50_8xb64-210e_mpii-256x256``) for real data, ``transfer/configs/mpii_cpu_128x128.py``
for the embedded synthetic set (used when ``--data`` is absent); ``--config`` picks another (any
path; a Python config is a program that mmengine runs to read it: pass only configs you would run),
``--cfg-options KEY=VALUE ...`` overrides its entries as mmengine's tools do.

What this driver adds to the config (:mod:`transfer.mpii_config`), over the file and the options:
- the backbone: ``--weights`` is opened once by ``pretrain/open_backbone.py`` (any checkpoint
  format it reads, or ``random``: the suite's random-init control, seeded by ``--seed``, ``--arch``
  picks the size), written into the run folder in mmpose's format and loaded by mmpose's
  ``Pretrained`` init, then checked tensor by tensor (:mod:`transfer.mpii_guard`). The head's width
  follows the arch. A small-image stem (3x3 conv1, no max-pool) is refused: mmpose's ResNet has
  no such stem.
- the protocol (RCL paper, Appendix D): ``fixed`` freezes the whole backbone (``frozen_stages=4``;
  ``norm_eval``: BN statistics stay those of the checkpoint) and trains the head; ``finetune``
  trains everything.
- the schedule: iterations over an infinite sampler, the recipe's epoch boundaries scaled to the
  run, so ``--max-iters N`` shortens the whole recipe to N iterations. The learning rate scales
  linearly with the real batch (``auto_scale_lr``: 5e-4 at batch 512).

``--out`` is the run folder (default ``runs/mpii_pose/<name>``); what it holds:
:mod:`transfer.mpii_run`.

Several GPUs: ``--gpus 8`` starts the driver under torchrun with mmengine's ``pytorch`` launcher
(a free port), as ``torchrun --nproc_per_node 8 -m transfer.mpii_pose --launcher pytorch ...``
would; ``--batch-size`` is per GPU and the learning rate follows the total batch.

``--resume`` (with the same flags) continues from the run folder's last Runner checkpoint (mmengine
first replays the data loader up to that iteration, for the same data order); ``--eval-only --out
RUN`` scores it again. Both read it with torch's ``weights_only`` reader and an explicit allow-list
(:mod:`transfer.mpii_checkpoint`), so a planted file runs no code; every tensor of it must then be
in the model as written.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mmengine.config import DictAction

import transfer.quiet  # noqa: F401,I001  (known library warnings silenced)
from benchmarks.results.leaderboard import DEFAULT_PATH, LeaderboardError
from pretrain.cli import number, one_line_errors, run_main
from pretrain.cli import torchrun_command as cli_torchrun
from pretrain.open_backbone import add_backbone_arguments
from transfer.mpii_config import PROTOCOLS, MpiiPoseConfig
from transfer.mpii_run import TASK, run


def parse_args(argv: list[str] | None = None) -> MpiiPoseConfig:
    """The command line, checked, as the run's :class:`MpiiPoseConfig`."""
    p = one_line_errors(argparse.ArgumentParser(
        prog="ssl-mpii-pose", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter))
    add_backbone_arguments(p)
    p.add_argument("--protocol", choices=PROTOCOLS, default="fixed",
                   help="fixed: frozen backbone (BN in eval), train the head; finetune: train all")
    p.add_argument("--data", type=Path, help="MPII root in mmpose's layout; default: the embedded "
                                             "synthetic set (generated on first use)")
    p.add_argument("--out", type=Path, help=f"the run folder; default runs/{TASK}/<name>, name "
                                            "= <weights' stem>-<8 hex of its hash>-<protocol>")
    p.add_argument("--name", help=f"run name under runs/{TASK} when --out is not given")
    p.add_argument("--max-iters", type=number(),
                   help="train N iterations, the whole schedule scaled to fit")
    p.add_argument("--batch-size", type=number(), help="per-process batch (lr follows the total)")
    p.add_argument("--val-images", type=number(), metavar="N",
                   help="evaluate on the first N val people only (a quick check; the protocol "
                        "evaluates all)")
    p.add_argument("--config", type=Path,
                   help="mmengine config (.py, .yaml, .json), any path; default transfer/configs/"
                        "mpii_cpu_128x128.py without --data, transfer/configs/"
                        "mpii_td-hm_res50_256x256.py with. A .py config is a program: mmengine "
                        "runs it (and its _base_ files) to read it, so pass only configs you would "
                        "run; YAML with Python tags is refused")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                   help="override config entries, as mmengine's tools do (e.g. "
                        "optim_wrapper.optimizer.lr=1e-3 train_dataloader.num_workers=4); the "
                        "driver's own settings (backbone, protocol, data, schedule) still apply")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the run (and of the random-init control)")
    p.add_argument("--leaderboard", type=Path, default=DEFAULT_PATH,
                   help="leaderboard CSV to update")
    p.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"), default="none",
                   help="mmengine's distributed launcher (pytorch: under torchrun)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in the run folder")
    p.add_argument("--eval-only", action="store_true",
                   help="score the run folder's last checkpoint (--out of the training run)")
    p.add_argument("--gpus", type=number(), default=1,
                   help="processes (one per GPU; gloo processes on a CPU): with N > 1 the driver "
                        "starts itself under torchrun with --launcher pytorch")
    args = p.parse_args(argv)
    if args.weights is None and not args.eval_only:
        p.error("--weights is required (a backbone checkpoint, or 'random')")
    if args.gpus > 1 and args.launcher != "none":
        p.error("--gpus starts torchrun itself; under a launcher of your own pass --launcher "
                "and not --gpus")
    return MpiiPoseConfig(**vars(args))


def torchrun_command(argv: list[str], gpus: int) -> list[str]:
    """This driver under torchrun with mmengine's ``pytorch`` launcher (``--gpus N``)."""
    return [*cli_torchrun("transfer.mpii_pose", argv, gpus), "--launcher", "pytorch"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    code = 0

    def train_and_score() -> None:
        nonlocal code
        settings = parse_args(argv)
        if settings.gpus > 1:
            import subprocess

            code = subprocess.call(torchrun_command(argv, settings.gpus))
            return
        record = run(settings)
        if os.environ.get("RANK", "0") != "0":  # under torchrun: one summary
            return
        print(json.dumps({k: record[k] for k in ("metrics", "best", "world_size", "batch_size",
                                                 "lr", "train_seconds", "eval_seconds")},
                         indent=2))

    return run_main(train_and_score, statuses={LeaderboardError: 2}) or code


if __name__ == "__main__":
    sys.exit(main())
