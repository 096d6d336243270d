"""A probe's per-example predictions in its ``predictions.npz``: how they are named (the probes
write them, :mod:`benchmarks.probes.probe`) and how the leaderboard reads them back, as a hostile
file: the leaderboard only names its path, and a hand-edited row can name anything.

Refused, with one line on stderr, and the row then shown without its test-set interval (nothing
else lost): a path that is not a zip archive of ``.npy`` arrays, an archive that would unpack to
more than :data:`UNPACKED_LIMIT` bytes, an array header that claims more data than its member
holds, and an array that needs unpickling (never done: a pickle runs code).
"""
from __future__ import annotations

import functools
import math
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


def prediction_key(protocol: str, metric: str, seed: int | str) -> str:
    """The name of one run's predicted labels in ``predictions.npz``."""
    return f"pred.{protocol}.{metric}.seed{seed}"


# A predictions file holds a few integer labels per test example and seed: tens of megabytes for
# the largest test set; a gigabyte is a file that is not one.
UNPACKED_LIMIT = 1 << 30


class PredictionsError(ValueError):
    """A predictions file the suite will not read."""


def read_predictions(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The arrays of the predictions file at ``path``, or None (said once on stderr) when it is
    refused. Read once per file version (path, size, modification time)."""
    stat = os.stat(path)
    return _cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _cached(path: str, size: int, mtime_ns: int) -> dict[str, np.ndarray] | None:
    try:
        return _read(Path(path))
    except PredictionsError as err:
        print(f"leaderboard: warning: {path}: {err}; its rows are shown without a test-set "
              "interval", file=sys.stderr)
        return None


def _read(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise PredictionsError("not a predictions file (the .npz archive of arrays a probe "
                               "writes); rerun the probe or clear the row's predictions cell")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            unpacked = sum(info.file_size for info in infos)
            if unpacked > UNPACKED_LIMIT:
                raise PredictionsError(f"would unpack to {unpacked} bytes, more than the "
                                       f"{UNPACKED_LIMIT} a predictions file may hold")
            for info in infos:
                _check_member(archive, info)
        with np.load(path, allow_pickle=False) as saved:
            return {name: saved[name] for name in saved.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        if isinstance(err, PredictionsError):
            raise
        raise PredictionsError(f"a damaged predictions archive ({type(err).__name__})") from err


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Refuse a member that is not a plain ``.npy`` array whose header fits its size."""
    if not info.filename.endswith(".npy"):
        raise PredictionsError(f"holds {info.filename!r}, not an array")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(member)
    if dtype.hasobject:
        raise PredictionsError(f"array {info.filename!r} holds Python objects, which would need "
                               "unpickling; the suite never unpickles a predictions file")
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise PredictionsError(f"array {info.filename!r} claims more data than it holds")


def load_correct(row: dict[str, str]) -> tuple[str, Any] | None:
    """(test set hash, per-example correctness) of a measured row from the ``predictions.npz``
    its probe saved (benchmarks/probes/probe.py), or None when there is none or it is refused
    (:func:`read_predictions`)."""

    path = row.get("predictions") or ""
    if not path or not Path(path).is_file():
        return None
    saved = read_predictions(path)
    key = prediction_key(row["protocol"], row["metric"], row["seed"])
    labels = f"labels.{row['metric']}"
    if saved is None or key not in saved or labels not in saved or "test_set" not in saved:
        return None
    if saved[key].ndim != 1 or saved[key].shape != saved[labels].shape:
        print(f"leaderboard: warning: {path}: predictions {key} and labels {labels} differ in "
              "shape; the row is shown without a test-set interval", file=sys.stderr)
        return None
    return str(saved["test_set"]), saved[key] == saved[labels]
