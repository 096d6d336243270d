"""The classic protocol on any labelled ImageFolder: linear probe and weighted kNN top-1.

    ssl-linear --weights CKPT|random --data ROOT [--protocol fixed|finetune]
        [--trials N] [--seed S] [--out RUN_FOLDER]

ROOT holds ``train/<class>/<image>`` and ``val/<class>/<image>`` with the same class folders
(the ImageNet layout); sorted folder names are the label order. fixed: frozen features, linear
probe and weighted kNN (k=5, 200); finetune: the whole backbone with a classifier head. Leaderboard
task ``imagefolder``, metric ``class_top1``. See benchmarks/probes/protocols.py for the recipes.
"""
from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.probes.probe import Task, main, run_task
from pretrain.data import DataError, ImageFolderData


def load(root: Path, split: str, transform) -> ImageFolderData:
    """``root/train`` or ``root/val``; the val classes must be the train classes."""
    data = ImageFolderData(root / ("val" if split == "test" else "train"), transform)
    train_classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if data.classes != train_classes:
        raise DataError(f"{data.root}: class folders {data.classes} differ from those of "
                        f"{root / 'train'} ({train_classes}); both splits need the same classes")
    return data


TASK = Task(
    name="imagefolder",
    classes=lambda root: {"class": len(load(root, "train", None).classes)},
    load=load,
    default_data=None,
    description=__doc__,
    command="ssl-linear",
)


def cli() -> int:
    """The console script ``ssl-linear`` (``python -m benchmarks.probes.linear``)."""
    return main(lambda argv: run_task(TASK, argv))


if __name__ == "__main__":
    sys.exit(cli())
