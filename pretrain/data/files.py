"""Reading a data set's files safely: every reader of pretrain.data goes through these.

A data folder is untrusted input. Each function raises :class:`DataError` naming the file and the
fix: a missing file, text that is not UTF-8, CSV or JSON that does not parse, an image that does
not decode or is a decompression bomb, a path listed in an annotation file that leaves the data
folder (``../``, an absolute path), and a FIFO or device where a file should be (opening one for
reading would wait forever for a writer: files are opened without blocking and checked first).
"""
from __future__ import annotations

import csv
import io
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from PIL import Image, UnidentifiedImageError

from pretrain.cli import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class DataError(InputError):
    """A data layout or file is missing or malformed; the message names the path and the fix."""


# The suite's limit on an image's pixels, checked from its header before it is decoded: a few KB
# of PNG can declare gigapixels (a decompression bomb). 8192 x 8192 is over 30x the pixels of a
# 1920 x 1080 photo (the real sets' images are smaller), and below PIL's own limit
# (Image.MAX_IMAGE_PIXELS, about 89M, where PIL only warns; it refuses at twice that).
MAX_IMAGE_PIXELS = 8192 * 8192


def open_regular(path: Path, what: str = "file") -> IO[bytes]:
    """``path`` opened for reading in binary, refused unless it is a regular file. Opened without
    blocking, so a FIFO (which would wait for a writer) or a device is refused at once."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as e:
        raise DataError(f"{path}: {what} is missing") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a directory"
                if stat.S_ISDIR(mode) else "a device or socket")
        raise DataError(f"{path}: is {kind}, not a regular file; replace it with the file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB, or raise :class:`DataError` naming it (also one larger than
    :data:`MAX_IMAGE_PIXELS`, and one that is not a regular file)."""
    try:
        with open_regular(path, "image file") as f, Image.open(f) as img:
            if img.width * img.height <= MAX_IMAGE_PIXELS:
                return img.convert("RGB")
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: refused by PIL as a decompression bomb ({e}); downscale "
                        "the image or replace it") from e
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({e}); the file is corrupt or not an "
                        "image - replace it or re-run the preparation script") from e
    raise DataError(f"{path}: image of {img.width} x {img.height} pixels, above the suite's "
                    f"limit of {MAX_IMAGE_PIXELS} (MAX_IMAGE_PIXELS in pretrain/data/files.py); "
                    "a decompression bomb, or an image to downscale before use")


def dataset_dir(root: str | Path, name: str, marker: str) -> Path:
    """``root`` if it holds ``marker``, else ``root/name`` if that does (a suite data root)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist (expected the {name} layout, "
                        "see datasets/README.md)")
    if not (root / marker).exists() and (root / name / marker).exists():
        return root / name
    return root


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing {what} (see datasets/README.md for the layout)")
    return path


def read_text(path: Path, what: str) -> str:
    """A data file's text, UTF-8 (a BOM is allowed); a wrong encoding names the line and byte."""
    require(path, what)
    with open_regular(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: byte {data[e.start:e.start + 1]!r} at offset "
                        f"{e.start} is not UTF-8; save the file as UTF-8 (e.g. iconv -f "
                        "latin1 -t utf-8)") from e


def read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(read_text(path, "label CSV"), newline=""))
    try:
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; "
                            f"expected header {','.join(columns)}")
        rows = list(reader)
    except csv.Error as e:  # a NUL byte, a field over csv's size limit
        # line_num counts the lines read before the one that failed
        raise DataError(f"{path}, line {reader.line_num + 1}: not CSV ({e}); repair or "
                        "regenerate the file") from e
    for line, row in enumerate(rows, start=2):
        empty = [c for c in columns if not (row.get(c) or "").strip()]
        if empty:
            raise DataError(f"{path}, line {line}: empty value for {', '.join(empty)}")
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def check_files_exist(base: Path, names: list[str], listed_in: Path) -> None:
    """Every listed file is a regular file inside ``base`` (one directory listing per folder, not
    one stat per file): a name that leaves ``base`` (absolute, or with ``..``) is refused."""
    escaping = [name for name in names if PurePosixPath(name).is_absolute()
                or Path(name).is_absolute() or '..' in PurePosixPath(name).parts]
    if escaping:
        raise DataError(f"{listed_in}: {len(escaping)} listed path(s) leave the data folder "
                        f"{base}, e.g. {escaping[0]!r}; list files relative to it, without '..'")
    listing: dict[Path, dict[str, bool]] = {}
    missing, irregular = [], []
    for name in names:
        p = base / name
        if p.parent not in listing:
            listing[p.parent] = ({entry.name: entry.is_file() for entry in os.scandir(p.parent)}
                                 if p.parent.is_dir() else {})
        if p.name not in listing[p.parent]:
            missing.append(name)
        elif not listing[p.parent][p.name]:
            irregular.append(name)
    if missing:
        raise DataError(f"{listed_in}: {len(missing)} image file(s) it lists are missing, e.g. "
                        f"{', '.join(missing[:5])} (looked in {base})")
    if irregular:
        raise DataError(f"{listed_in}: {len(irregular)} listed file(s) are not regular files (a "
                        f"folder, FIFO or device), e.g. {', '.join(irregular[:5])} in {base}")


def read_json(path: Path) -> Any:
    text = read_text(path, "annotation file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # an annotation file is an object or a list: one that does not end as one was cut off
        ending = "" if text.rstrip().endswith(("}", "]")) else " (it ends mid-document: truncated?)"
        raise DataError(f"{path}: not valid JSON at line {e.lineno} column {e.colno} "
                        f"({e.msg}){ending}; re-download or regenerate it") from e
    except RecursionError as e:
        raise DataError(f"{path}: JSON nested too deeply to be an annotation file") from e


def check_types(path: Path, record: dict, types: dict[str, type | tuple[type, ...]],
                 what: str) -> None:
    for field, kind in types.items():
        if field in record and (not isinstance(record[field], kind)
                                or isinstance(record[field], bool)):
            names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise DataError(f"{path}: {what}: '{field}' must be {names}, got "
                            f"{record[field]!r:.60}; repair or regenerate the file")


def require_fields(path: Path, record: dict, fields: Sequence[str], what: str) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{path}: {what} is not an object: {record!r:.80}")
    missing = [f for f in fields if f not in record]
    if missing:
        raise DataError(f"{path}: {what} lacks field(s) {', '.join(missing)}: {record!r:.120}")

