"""Write the embedded synthetic default in the suite's data layouts.

    python datasets/make_synthetic.py --out DIR [--size tiny|default] [--seed N]

Writes DIR/coco, DIR/mpii, DIR/fairface and DIR/colorful_mnist (layouts: datasets/README.md),
deterministically by seed. DIR must not exist yet, or be empty (nothing is overwritten). The files
are written into a new hidden folder beside DIR, renamed to DIR when complete; a failure removes
that folder and nothing else. The suite's own default (``pretrain.synthetic.default_root()``) is
the same thing cached under $SUITE_DATA_DIR.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from pretrain.synthetic import SIZES, counts, generate_into


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    ap.add_argument("--size", choices=tuple(SIZES), default="default")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        what = "is not empty" if args.out.is_dir() else "is not a folder"
        ap.exit(2, f"make_synthetic: error: --out {args.out} exists and {what}; choose a new "
                   "folder\n")
    start = time.time()
    try:
        generate_into(args.out, size=args.size, seed=args.seed)
    except OSError as err:  # a full disk, an unwritable folder
        ap.exit(2, f"make_synthetic: error: could not write {args.out}: "
                   f"{err.strerror or err}; nothing was left behind\n")
    images = ", ".join(f"{name} {n_train}/{n_test}"
                       for name, (n_train, n_test) in counts(args.size).items())
    print(f"wrote {args.out} ({args.size}, seed {args.seed}) in {time.time() - start:.1f} s: "
          f"{images} (train/test images)")
    return args.out


if __name__ == "__main__":
    main()
