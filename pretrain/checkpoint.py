"""The suite's checkpoint formats, atomic writes, and loaders that never execute code.

Backbone checkpoint (what converters and benchmarks read): a ``.safetensors`` file holding a
torchvision ResNet state_dict (no ``fc.*``) and, in the safetensors header, ``suite_meta``: a JSON
object with method, regularizer, arch, stem, data, epochs, steps, seed, commit, and for a
MetaMask backbone ``feature_mask``: the values of its dimensional mask M, which its paper's kNN
applies to the pooled features (:func:`feature_mask`). Safetensors cannot carry code, so reading
it is safe whatever its origin.

Training state (for ``--resume``): a ``torch.save`` file of tensors and plain containers only,
read back with ``weights_only=True``.

The two readers of files a user may have downloaded, :func:`load_torch` and
:func:`load_pickle_arrays`, also serve detectron2 and mmengine (``transfer/compat.py`` routes the
engines' own loaders through them), so they take a path or an open binary file.

Every write is atomic: temporary file in the same folder, fsync, rename, fsync of the folder;
a kill at any moment leaves either the previous file or the new one, never a truncated file.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

import torch

from pretrain.cli import InputError
from pretrain.files import atomic_write

META_KEY = "suite_meta"
FORMAT_VERSION = "1"


class CheckpointError(InputError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


class NotWrittenBySuite(CheckpointError):
    """A safetensors file without the suite's metadata: another library's state dict."""


def save_backbone(path: str | os.PathLike, state_dict: dict[str, torch.Tensor],
                  meta: dict[str, Any]) -> Path:
    """Write the suite's backbone checkpoint (safetensors + ``suite_meta``) atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    header = {META_KEY: json.dumps({"format_version": FORMAT_VERSION, **meta}, sort_keys=True)}
    payload = save(tensors, metadata=header)
    return atomic_write(path, lambda f: f.write(payload))


def load_backbone(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a backbone checkpoint written by :func:`save_backbone`: (state_dict, meta).

    A tensor holding NaN or infinity is refused: a diverged backbone would be scored at chance.
    """
    from safetensors import SafetensorError, safe_open

    path = existing_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(err)}); the "
                              "file may be truncated or of another format") from err
    if META_KEY not in header:
        raise NotWrittenBySuite(f"{path}: safetensors file without '{META_KEY}' metadata, so it "
                                "was not written by this suite; convert it with "
                                "transfer/convert.py")
    try:
        meta = json.loads(header[META_KEY])
    except ValueError as err:
        raise CheckpointError(f"{path}: its '{META_KEY}' metadata is not valid JSON "
                              f"({_one_line(err)}); the file was edited or damaged, export it "
                              "again") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its '{META_KEY}' metadata is a {type(meta).__name__}, "
                              "not a JSON object; the file was edited or damaged, export it "
                              "again")
    check_finite(tensors, str(path))
    return tensors, meta


def feature_mask(meta: dict[str, Any], feature_dim: int, source: str) -> torch.Tensor | None:
    """The backbone's ``feature_mask`` (feature_dim,) from its metadata, None when it has none;
    a mask that is not ``feature_dim`` finite numbers is a :class:`CheckpointError`."""
    values = meta.get("feature_mask")
    if values is None:
        return None
    if not (isinstance(values, list) and len(values) == feature_dim and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise CheckpointError(f"{source}: its 'feature_mask' metadata is not a list of "
                              f"{feature_dim} numbers (the backbone's feature width); the file "
                              "was edited or damaged, export it again")
    mask = torch.tensor(values, dtype=torch.float32)
    if not torch.isfinite(mask).all():
        raise CheckpointError(f"{source}: its 'feature_mask' holds NaN or infinity; the run "
                              "diverged, train it again")
    return mask


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse NaN or infinite values in any floating-point tensor, naming the first one."""
    found = first_non_finite(tensors)
    if found:
        raise CheckpointError(f"{source}: tensor '{found[0]}' holds {found[1]} NaN or infinite "
                              "value(s); the training that wrote it diverged, so it is not a "
                              "usable backbone")


def first_non_finite(tensors: dict[str, torch.Tensor]) -> tuple[str, int] | None:
    """(name, count of NaN/inf values) of the first floating-point tensor that has any."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name, int((~torch.isfinite(tensor)).sum())
    return None


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a training state (tensors and plain containers only) atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_torch(source: str | os.PathLike | IO[bytes], map_location: Any = "cpu",
               admit: Sequence[Any] = ()) -> Any:
    """``torch.load`` restricted to tensors and plain containers (never runs code from the file).

    ``source`` is a path or an open binary file (the engines' loaders pass either). ``admit``
    widens torch's ``weights_only`` allow-list by exactly those globals (objects, or
    ``(object, "module.name")`` pairs as :func:`torch.serialization.safe_globals` takes them),
    for a file kind that holds more than tensors (e.g. mmengine's Runner checkpoints).
    """
    source, name = _readable(source)
    try:
        with torch.serialization.safe_globals(list(admit)):
            return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused:
            raise CheckpointError(f"{name}: refused to load: it holds '{refused.group(1)}', an "
                                  "object other than tensors and plain containers, which could "
                                  "run code") from err
        raise CheckpointError(f"{name}: not a torch checkpoint ({_describe(source)}); the file "
                              "may be truncated or of another format") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{name}: cannot be read as a torch checkpoint ({_one_line(err)}); "
                              "the file may be truncated or of another format") from err


class RestrictedUnpickler(pickle.Unpickler):
    """The unpickler of ``.pkl`` files (detectron2's format): it admits the globals in ``ALLOWED``
    (numpy arrays, numpy scalars/dtypes and builtin containers) and refuses every other one, so a
    file can hold data but never make the reader call code. Torch files are read by
    :func:`load_torch` (torch's own ``weights_only`` reader), never through this class. Why a
    second reader for ``.pkl``: torch's weights_only unpickler has no FRAME opcode, so it cannot
    read a protocol-4 pickle, what Python 3's ``pickle.dump`` and MoCo's detectron2 converter
    write (torch 2.14.1: "Unsupported operand 149")."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
        ("builtins", "slice"), ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED or (module == "numpy" and name.endswith("DType")) \
                or module == "numpy.dtypes":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def load_pickle_arrays(source: str | os.PathLike | IO[bytes]) -> Any:
    """Load a ``.pkl`` (detectron2 format) admitting only numpy arrays and plain containers.

    ``source`` is a path or an open binary file (the engines' loaders pass either).
    """
    source, name = _readable(source)
    try:
        if isinstance(source, Path):
            with open(source, "rb") as f:
                return RestrictedUnpickler(f, encoding="latin1").load()
        return RestrictedUnpickler(source, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if "not allowed" not in str(err):
            raise CheckpointError(f"{name}: not a pickle ({_describe(source)}); the file may be "
                                  "truncated or of another format") from err
        raise CheckpointError(f"{name}: refused to unpickle: {err}. Only numpy arrays and plain "
                              "containers are read from .pkl files, so a file that could run "
                              "code is never loaded") from err
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise CheckpointError(f"{name}: not a readable pickle ({_one_line(err)}); the file may "
                              "be truncated") from err


def _readable(source: str | os.PathLike | IO[bytes]) -> tuple[Path | IO[bytes], str]:
    """(checked path or the open file, the name to put in messages)."""
    if hasattr(source, "read"):
        return source, str(getattr(source, "name", "<stream>"))
    path = existing_file(source)
    return path, str(path)


LFS_POINTER = b"version https://git-lfs"


def _describe(source: Path | IO[bytes]) -> str:
    """What a file that failed to unpickle is, from its first bytes (a Git LFS pointer is a
    common stand-in for a checkpoint that was never downloaded)."""
    if isinstance(source, Path):
        with open(source, "rb") as f:
            head = f.read(64)
    else:
        try:
            source.seek(0)
            head = source.read(64)
        except (OSError, ValueError):
            head = b""
    if head.startswith(LFS_POINTER):
        return "it is a Git LFS pointer, not the file itself: fetch it with 'git lfs pull'"
    return f"it starts with {head[:16]!r}"


def _one_line(err: BaseException) -> str:
    """An exception's text on one line (third-party messages span several)."""
    return " ".join(str(err).split())[:300]


def existing_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or :class:`CheckpointError` when it is absent or empty."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (an interrupted download or copy?)")
    return path
