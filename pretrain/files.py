"""Files without torch: atomic writes, file hashes and the code's git commit (provenance).

A leaf module: it imports nothing of the project, so the torch-free leaderboard and report and
the command-line helpers (:mod:`pretrain.cli`) can write and hash files.
"""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename it to ``path``."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise OSError(f"cannot write {path}: {err.strerror or err} "
                      "(is the folder writable?)") from err
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(f"could not write {path}: {err.strerror or err}; any previous file "
                          "there is unchanged") from err
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def git_commit(default: str = "unknown") -> str:
    """The code's git commit (with ``+dirty`` when the tree has changes), for provenance."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return default
    return sha + ("+dirty" if dirty else "")


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes: a checkpoint's identity."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hash(path: str | os.PathLike, length: int = 12) -> str:
    """Short sha256 of a file's bytes: the backbone id of a checkpoint."""
    return file_sha256(path)[:length]
