"""Assemble and validate FairFace (Karkkainen & Joo 2021) in its official layout.

    python datasets/prepare_fairface.py --images DIR --train-csv CSV --val-csv CSV --out DIR
                                        [--copy]

From the official release (https://github.com/joojs/fairface): --images is the extracted
``fairface-img-margin025-trainval.zip`` (holding ``train/`` and ``val/``), the CSVs are
``fairface_label_train.csv`` and ``fairface_label_val.csv`` (columns file, age, gender, race,
service_test; ``file`` is relative to --images, e.g. ``train/1.jpg``).

Both CSVs are checked (columns, the official label strings, every listed image present) before
anything is written. OUT then receives the two CSVs and ``train``/``val`` as symbolic links to the
image folders (``--copy`` copies them instead): the layout ``pretrain.data.FairFace`` reads.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pretrain.data import DataError, FairFace

SPLITS = ("train", "val")


def prepare(images: Path, csvs: dict[str, Path], out: Path, copy: bool = False) -> Path:
    """Validate the raw release and write the layout into ``out``; returns ``out``."""
    staging = out.with_name(out.name + ".check")  # validate with the reader before touching out
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for split in SPLITS:
            if not csvs[split].is_file():
                raise DataError(f"{csvs[split]}: missing {split} label CSV "
                                f"(fairface_label_{split}.csv from the official release)")
            if not (images / split).is_dir():
                raise DataError(f"{images / split}: missing image folder (extract "
                                "fairface-img-margin025-trainval.zip into --images)")
            shutil.copyfile(csvs[split], staging / f"fairface_label_{split}.csv")
            (staging / split).symlink_to((images / split).resolve(), target_is_directory=True)
            FairFace(staging, split)
    except DataError:
        shutil.rmtree(staging, ignore_errors=True)  # removes the links, never their targets
        raise
    for split in SPLITS:
        (staging / split).unlink()
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        if (out / split).exists() or (out / f"fairface_label_{split}.csv").exists():
            raise DataError(f"{out}: already holds FairFace {split} data; choose a new --out")
    for split in SPLITS:
        shutil.move(staging / f"fairface_label_{split}.csv", out / f"fairface_label_{split}.csv")
        if copy:
            shutil.copytree(images / split, out / split)
        else:
            (out / split).symlink_to((images / split).resolve(), target_is_directory=True)
    staging.rmdir()
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="folder holding train/ and val/")
    ap.add_argument("--train-csv", type=Path, required=True)
    ap.add_argument("--val-csv", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--copy", action="store_true", help="copy images instead of linking")
    args = ap.parse_args(argv)
    try:
        out = prepare(args.images, {"train": args.train_csv, "val": args.val_csv}, args.out,
                      args.copy)
    except DataError as e:
        sys.exit(f"error: {e}")
    sizes = {s: len(FairFace(out, s)) for s in SPLITS}
    print(f"wrote FairFace to {out}: {sizes['train']} train, {sizes['val']} val images")
    return out


if __name__ == "__main__":
    main()
