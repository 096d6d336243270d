"""COCO foreground/background (ICL-MSR, section 6.2): does a backbone see the object or context?

    ssl-coco-fgbg --weights CKPT|random [--data COCO_ROOT] [--trials N] [--out RUN_FOLDER]

The single-object images of ICL-MSR's 30 categories, as full images and as their object's box
crop ("fg"). A linear probe is trained on the frozen features of one view and tested on both:
metrics ``train_{full,fg}_test_{full,fg}_top1`` (the paper's settings 1-4). A backbone that relies
on context does much better on full images than on foregrounds. COCO_ROOT has the COCO layout
(annotations/instances_{train,val}2017.json, {train,val}2017/); with no --data it runs on the
embedded synthetic default (10 of the 30 categories). See benchmarks/probes/protocols.py for the
recipe.
"""
from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.probes.features import eval_transform
from benchmarks.probes.probe import Task, main, prepare, report
from benchmarks.probes.protocols import LinearRecipe, accuracy, linear_predict
from pretrain.data import ICL_MSR_CATEGORIES, CocoObjects
from pretrain.synthetic import default_root

VIEWS = {"full": "full", "fg": "foreground"}


def load(root: Path, split: str, transform, view: str = "full") -> CocoObjects:
    return CocoObjects(root, "val" if split == "test" else split, view, transform=transform)


TASK = Task(
    name="coco_fgbg",
    classes={"category": len(ICL_MSR_CATEGORIES)},
    load=load,
    default_data=default_root,
    description=__doc__,
    protocols=("fixed",),
    supervised=False,
)


def run(argv: list[str] | None = None) -> dict:
    job = prepare(TASK, argv, "linear")
    cfg = job.cfg
    features = {(split, short): job.features(job.load(split, eval_transform(cfg.image_size),
                                                      view=view), f"coco/{split}/{short}")
                for split in ("train", "test") for short, view in VIEWS.items()}
    recipe = LinearRecipe(epochs=cfg.linear_epochs)
    per_seed = []
    for seed in job.seeds:
        result = {}
        for train_view in VIEWS:
            tests = {short: features["test", short] for short in VIEWS}
            predicted = linear_predict(features["train", train_view], tests, job.task.classes,
                                       seed, recipe, cfg.device)
            for short, p in predicted.items():
                metric = f"train_{train_view}_test_{short}_top1"
                job.predictions.add("linear", seed, p, tests[short].labels, cfg.data,
                                    metric=metric)
                result[metric] = accuracy(p, tests[short].labels)["category"]
        per_seed.append({"linear": result})
    present = job.load("train", None).present
    return report(job, per_seed, extra={"categories_present": present})


def cli() -> int:
    """The console script ``ssl-coco-fgbg`` (``python -m benchmarks.probes.coco_fgbg``)."""
    return main(run)


if __name__ == "__main__":
    sys.exit(cli())
