"""The embedded default data: synthetic COCO, MPII, FairFace, Colorful-MNIST and Pascal VOC in the
real layouts.

Each set is written in exactly the layout the readers in :mod:`pretrain.data` (and detectron2,
pycocotools, mmpose) read for the real data set, and each carries the shortcut the seed papers
study, so the suite has something to measure. One module per set, each with ``generate(out,
n_train, n_test, seed)`` and its image counts per size (``IMAGES``); what they share (colours,
textures, CSV writing) is in :mod:`pretrain.synthetic.common`. Adding a set: its module, its line
in :data:`GENERATORS` (keyed like its reader in ``pretrain.data.LAYOUTS``).

``generate(out, size, seed)`` writes all of them, deterministically by seed. ``default_root()``
caches one generated set under ``$SUITE_DATA_DIR`` (default ``<repo>/data``).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pretrain.data_home import data_dir
from pretrain.synthetic import coco, colorful_mnist, fairface, mpii, voc

# The generator module of each data layout, by its data key (pretrain.data.LAYOUTS).
GENERATORS = {"colorful_mnist": colorful_mnist, "fairface": fairface, "coco": coco, "mpii": mpii,
              "voc": voc}
SIZES = ("tiny", "default")


def counts(size: str) -> dict[str, tuple[int, int]]:
    """{set: (train, test) images} of ``size``."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    return {name: module.IMAGES[size] for name, module in GENERATORS.items()}


def generate(out: Path, size: str = "default", seed: int = 0) -> Path:
    """Write ``out/<set>`` for every set of :data:`GENERATORS` at ``size`` in ``SIZES``; returns
    ``out``.

    Deterministic by ``seed``: the same seed writes the same files.
    """
    out = Path(out)
    for name, (n_train, n_test) in counts(size).items():
        GENERATORS[name].generate(out / name, n_train, n_test, seed=seed)
    return out


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def default_root(size: str = "default", seed: int = 0) -> Path:
    """``$SUITE_DATA_DIR/synthetic-{size}-seed{seed}``, generated first if absent.

    Generation goes into a temporary sibling folder that is renamed into place when complete, under
    a file lock, so concurrent callers generate once and an interrupted run leaves no partial set.
    """
    root = data_dir() / f"synthetic-{size}-seed{seed}"
    if _complete(root):
        return root
    with _file_lock(root.with_name(root.name + ".lock")):
        if _complete(root):  # another process finished it while we waited
            return root
        if root.is_dir():  # made before a set joined GENERATORS: add the missing sets
            _add_missing(root, size, seed)
        else:
            generate_into(root, size, seed)
    return root


def _complete(root: Path) -> bool:
    return all((root / name).is_dir() for name in GENERATORS)


def _add_missing(root: Path, size: str, seed: int) -> None:
    """Write each set ``root`` lacks into a temporary folder inside it, renamed into place when
    complete (each set's generator draws from its own seed, so the result is what
    :func:`generate` writes)."""
    for name, (n_train, n_test) in counts(size).items():
        if not (root / name).is_dir():
            tmp = root / f".{name}.partial-{os.getpid()}-{time.time_ns()}"
            try:
                GENERATORS[name].generate(tmp, n_train, n_test, seed=seed)
                os.replace(tmp, root / name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)


def generate_into(root: Path, size: str = "default", seed: int = 0) -> Path:
    """:func:`generate` into a new temporary folder beside ``root`` (created here, so no other
    folder is ever touched), renamed to ``root`` when complete; on failure it is removed."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.partial-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir()  # exclusive: fails if the folder exists, so the one removed below is ours
    try:
        generate(tmp, size=size, seed=seed)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
