"""FairFace (RCL's multi-attribute benchmark): age (9), gender (2) and race (7) top-1.

    python benchmarks/fairface.py --weights CKPT|random [--data ROOT]
        [--protocol fixed|finetune] [--supervised-on age,gender,race|all] [--seeds N] [--out DIR]

fixed: frozen features, linear probe and weighted kNN (k=5, 200) on the three attributes;
finetune: the whole backbone with one head per attribute. Contrastive backbones tend to learn the
easy attribute (race: skin tone) and partly ignore age and gender. Splits: train / val (the
official release has no test split). With no --data it runs on the embedded synthetic default;
see benchmarks/probes/protocols.py for the recipes.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/probes/fairface.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.probes.probe import Task, main, run_task  # noqa: E402
from pretrain.data import FAIRFACE_LABELS, FairFace  # noqa: E402
from pretrain.synthetic import default_root  # noqa: E402

TASK = Task(
    name="fairface",
    classes={attr: len(names) for attr, names in FAIRFACE_LABELS.items()},
    load=lambda root, split, transform: FairFace(root, "val" if split == "test" else split,
                                                 transform),
    default_data=default_root,
    description=__doc__,
)

if __name__ == "__main__":
    sys.exit(main(lambda argv: run_task(TASK, argv)))
