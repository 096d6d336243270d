"""Where the generated data sets live: ``$SUITE_DATA_DIR``, else ``<repo>/data``.

Apart from :mod:`pretrain.synthetic` (which generates them and imports the data readers, hence
torch) so that the torch-free results (the leaderboard's "is this the embedded data?") can ask.
"""
from __future__ import annotations

import os
from pathlib import Path

from pretrain.cli import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_VARIABLE = "SUITE_DATA_DIR"


def data_dir() -> Path:
    """``$SUITE_DATA_DIR``, or ``<repo>/data`` (git-ignored). A value that is empty or names
    something other than a folder is refused on one line."""
    value = os.environ.get(DATA_DIR_VARIABLE)
    if value is None:
        return REPO_ROOT / "data"
    path = Path(value)
    if not value.strip() or (path.exists() and not path.is_dir()):
        found = "is empty" if not value.strip() else "names a file, not a folder"
        raise InputError(f"{DATA_DIR_VARIABLE}={value!r} {found}; set it to the folder that "
                         "holds (or will hold) the generated data sets, or unset it")
    return path
