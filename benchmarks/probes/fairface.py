"""FairFace (RCL's multi-attribute benchmark): age (9), gender (2) and race (7) top-1.

    ssl-fairface --weights CKPT|random [--data ROOT]
        [--protocol fixed|finetune] [--supervised-on age,gender,race|all]
        [--trials N] [--seed S] [--out RUN_FOLDER]

fixed: frozen features, linear probe and weighted kNN (k=5, 200) on the three attributes;
finetune: the whole backbone with one head per attribute. Contrastive backbones tend to learn the
easy attribute (race: skin tone) and partly ignore age and gender. Splits: train / val (the
official release has no test split). With no --data it runs on the embedded synthetic default;
see benchmarks/probes/protocols.py for the recipes.
"""
from __future__ import annotations

import sys

from benchmarks.probes.probe import Task, main, run_task
from pretrain.data import FAIRFACE_LABELS, FairFace
from pretrain.synthetic import default_root

TASK = Task(
    name="fairface",
    classes={attr: len(names) for attr, names in FAIRFACE_LABELS.items()},
    load=lambda root, split, transform: FairFace(root, "val" if split == "test" else split,
                                                 transform),
    default_data=default_root,
    description=__doc__,
)

def cli() -> int:
    """The console script ``ssl-fairface`` (``python -m benchmarks.probes.fairface``)."""
    return main(lambda argv: run_task(TASK, argv))


if __name__ == "__main__":
    sys.exit(cli())
