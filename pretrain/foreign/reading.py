"""Reading a checkpoint file without executing code from it, and with its size bounded before
anything is allocated.

:func:`read_file`: safetensors; ``.pkl`` through the arrays-only unpickler
(:mod:`pretrain.checkpoint`); anything else through :func:`load_training_file`, torch's
``weights_only`` reader with an allow-list of the inert objects real training files hold
(:data:`TRAINING_FILE_GLOBALS`: ``argparse.Namespace`` in timm's ``CheckpointSaver`` files,
mmengine's ``HistoryBuffer`` in every Runner checkpoint, numpy arrays, scalars and dtypes). Those
objects are rebuilt as attribute-only stand-ins, so no code of their libraries runs either. A file
holding any other object is refused with its name and what to do; a Git LFS pointer is named as
such; a zip archive whose entries would unpack beyond :data:`MAX_FILE_BYTES`, or that compresses
them (``torch.save`` never does: a 4 MB zip bomb would otherwise unpack to gigabytes inside
torch's reader), is refused before torch opens it.
"""
from __future__ import annotations

import importlib
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.checkpoint import (
    CheckpointError,
    NotWrittenBySuite,
    existing_file,
    load_backbone,
    load_pickle_arrays,
)
from pretrain.foreign.messages import one_line

MAX_FILE_BYTES = 4 << 30        # far above any ResNet-50 training checkpoint
LFS_POINTER = b"version https://git-lfs"


class _Inert:
    """An admitted object of a training file, rebuilt as its pickled attributes only: none of its
    library's code (``__init__``, ``__setstate__``) runs, and the library need not be installed."""

    qualified_name = ""

    def __repr__(self) -> str:
        return f"<{self.qualified_name} read as data>"


def _inert(qualified_name: str) -> tuple[type, str]:
    """A stand-in class admitted under ``qualified_name`` (torch's safe-globals tuple form)."""
    return type(qualified_name.rsplit(".", 1)[-1], (_Inert,),
                {"qualified_name": qualified_name}), qualified_name


_HISTORY_BUFFER = _inert("mmengine.logging.history_buffer.HistoryBuffer")
# mmengine's HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, name).
_HISTORY_BUFFER_METHODS = {"min", "max", "mean", "current"}


def _history_buffer_method(owner: Any, name: Any) -> str:
    """The only ``getattr`` a training file may call: a HistoryBuffer statistics method, which
    becomes its name."""
    if owner is not _HISTORY_BUFFER[0] or name not in _HISTORY_BUFFER_METHODS:
        raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not allowed")
    return f"HistoryBuffer.{name}"


def _numpy_globals() -> list[tuple[Any, str]]:
    """numpy's array, scalar and dtype reconstructors under both module paths (numpy 1: ``numpy.
    core``, numpy 2: ``numpy._core``): C code that rebuilds numbers from bytes."""
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1
        multiarray = importlib.import_module("numpy.core.multiarray")
    found = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for core in ("numpy.core", "numpy._core"):
        found += [(multiarray._reconstruct, f"{core}.multiarray._reconstruct"),
                  (multiarray.scalar, f"{core}.multiarray.scalar")]
    for code in "?bhilqBHILQefdFD":  # numpy 2 may name an array's dtype by its DType class
        kind = type(np.dtype(code))
        found.append((kind, f"numpy.dtypes.{kind.__name__}"))
    return found


# What a training file may hold besides tensors and plain containers: torch's weights_only reader
# admits these exact globals and nothing else.
TRAINING_FILE_GLOBALS: list[tuple[Any, str]] = [
    _inert("argparse.Namespace"),      # timm's CheckpointSaver: the training arguments
    _HISTORY_BUFFER,                   # mmengine Runner checkpoints: message_hub.log_scalars
    (_history_buffer_method, "builtins.getattr"),
    *_numpy_globals(),                 # mmengine's message hub; numpy weights
]
# What to do with a file that holds something else, by the refused object's package.
EXPORT_HINTS = {
    "pytorch_lightning": "load it where its LightningModule's code is and save "
                         "module.state_dict() with torch.save",
    "lightning": "load it where its LightningModule's code is and save module.state_dict() "
                 "with torch.save",
    "mmengine": "export the weights with the library's tool (e.g. mmpretrain's "
                "tools/model_converters/publish_model.py)",
    "omegaconf": "save checkpoint['state_dict'] alone with torch.save where the training code is",
}
DEFAULT_HINT = ("save the weights alone where the model was trained "
                "(torch.save(model.state_dict(), 'weights.pth')) and pass that file")


def read_file(path: Path) -> tuple[Any, dict[str, Any]]:
    """The file's contents, read without executing code, with the suite meta when present."""
    existing_file(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(LFS_POINTER):
        raise CheckpointError(f"{path}: a Git LFS pointer ({size} bytes of text), not the "
                              "checkpoint itself: the file was never downloaded. Run 'git lfs "
                              "pull' in its repository, or download the file directly")
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: {size / 2**30:.1f} GiB, larger than any ResNet-18/34/50 "
                              "training checkpoint; save the backbone's state_dict alone")
    if path.suffix == ".safetensors" or head[8:10] == b'{"':
        return _read_safetensors(path)
    if path.suffix in (".pkl", ".pickle"):
        return load_pickle_arrays(path), {}
    try:
        return load_training_file(path), {}
    except CheckpointError as err:
        if head[:1] != b"\x80":  # a plain pickle (numpy arrays, e.g. a renamed .pkl) gets a try
            raise
        return _plain_pickle(path, err), {}


def _plain_pickle(path: Path, torch_error: CheckpointError) -> dict:
    """A pickle torch's reader did not read: a plain pickle of arrays (read by the arrays-only
    unpickler), or a planted one (refused naming the object it holds); otherwise torch's error
    stands (a damaged or legacy-format torch file)."""
    try:
        content = load_pickle_arrays(path)
    except CheckpointError as err:
        refused = re.search(r"global '([^']+)' is not allowed", str(err))
        if refused:
            raise CheckpointError(
                f"{path}: refused: a plain pickle holding a '{refused.group(1)}' object, and "
                "reading one could run code from the file, so only tensors and plain data are "
                f"read; {DEFAULT_HINT}") from err
        raise torch_error from err
    if not isinstance(content, dict):
        raise torch_error
    return content


def _read_safetensors(path: Path) -> tuple[Any, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_backbone(path)
    except NotWrittenBySuite:
        pass  # a plain safetensors state dict (timm, Hugging Face): no suite metadata
    try:
        return load_file(str(path)), {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({one_line(err)})") \
            from err


def check_zip_bounds(path: Path) -> None:
    """Refuse a zip archive that would unpack beyond :data:`MAX_FILE_BYTES` or that compresses
    an entry, from its directory alone (nothing is unpacked). Not a zip: nothing to check."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return  # torch's legacy format, a damaged or missing file: torch's reader says which
    compressed = [e for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if compressed:
        entry = compressed[0]
        raise CheckpointError(
            f"{path}: its zip entry '{entry.filename}' is compressed ({entry.compress_size} bytes "
            f"unpack to {entry.file_size}); torch.save stores entries uncompressed, so this is "
            "not a file torch wrote, and it is not unpacked. Save the weights again with "
            "torch.save")
    total = sum(e.file_size for e in entries)
    if total > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: its zip entries add up to {total / 2**30:.1f} GiB, more "
                              "than any ResNet-18/34/50 training checkpoint; not unpacked")


def load_training_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """A torch checkpoint read with ``torch.load(weights_only=True)`` admitting
    :data:`TRAINING_FILE_GLOBALS` as well, its zip directory bounded first
    (:func:`check_zip_bounds`); any refusal or damage is one :class:`CheckpointError` line.

    Why torch's reader rather than a restricted ``pickle.Unpickler`` handed to
    ``torch.load(weights_only=False, pickle_module=...)``: torch's weights_only unpickler is a
    separate implementation built as a security boundary (a fixed set of opcodes; every global
    looked up in an allow-list of objects, never imported by name; calls only on admitted
    callables; ``BUILD`` only on admitted types), and it covers all of torch's file formats. With
    ``weights_only=False`` torch's own loader runs instead, whose legacy format reads header
    objects with ``pickle_module.load`` and was never designed to face a hostile file.
    """
    path = existing_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    check_zip_bounds(path)
    try:
        with torch.serialization.safe_globals(TRAINING_FILE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols, not for users
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_refusal(path, str(err), head)) from err
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError, MemoryError, RecursionError,
            OverflowError) as err:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint "
                              f"({type(err).__name__}: {one_line(err)[:160]}; it starts with "
                              f"{head!r}); the file may be truncated or of another "
                              "format") from err


def _refusal(path: Path, message: str, head: bytes) -> str:
    """One line for a file torch's reader refused: the object it holds and what to do."""
    refused = re.search(r"GLOBAL (\S+) was not an allowed global", message) or \
        re.search(r"unsupported GLOBAL (\S+) whose module", message)
    if refused:
        name = refused.group(1)
        hint = EXPORT_HINTS.get(name.split(".")[0], DEFAULT_HINT)
        return (f"{path}: refused: it holds a '{name}' object, and reading one could run code "
                f"from the file, so only tensors and plain data are read; {hint}")
    inner = re.search(r"WeightsUnpickler error:(.*?)(Check the documentation|$)", message,
                      re.DOTALL)
    reason = one_line(inner.group(1) if inner else message)[:200]
    if "Unsupported operand" in reason or "Expected" in reason or not inner:
        return (f"{path}: not a readable torch checkpoint ({reason}; it starts with "
                f"{head!r}); the file may be truncated or of another format")
    return (f"{path}: refused: it holds something other than tensors and plain data ({reason}), "
            f"so it is not read; {DEFAULT_HINT}")
