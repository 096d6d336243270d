"""What the engine shims of :mod:`transfer.compat` share: the placeholder of a compiled extension
whose ops fail when called, and the suite's never-code-running readers (plain YAML, arrays-only
pickles, ``weights_only`` torch files) that the guards put in the engines' loaders."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class MissingCompiledOpError(RuntimeError):
    """A compiled (C++/CUDA) op was called that this installation does not provide."""


class _MissingOpsModule(types.ModuleType):
    """Placeholder for a compiled extension module: attributes exist, calling them fails clearly.

    Attributes must exist because mmcv's ``ext_loader.load_ext`` asserts ``hasattr`` for every op
    at import time; the error belongs at the moment an op is actually used.
    """

    def __init__(self, name: str, remedy: str) -> None:
        super().__init__(name)
        self.__spec__ = importlib.machinery.ModuleSpec(name, None)
        self.__file__ = None
        self._remedy = remedy

    def __getattr__(self, op: str) -> Callable[..., Any]:
        if op.startswith("__"):
            raise AttributeError(op)
        module, remedy = self.__name__, self._remedy

        def missing(*args: Any, **kwargs: Any) -> Any:
            raise MissingCompiledOpError(
                f"compiled op {module}.{op} is not available in this installation. {remedy}"
            )

        missing.__name__ = op
        return missing


def has_real_module(name: str) -> bool:
    existing = sys.modules.get(name)
    if existing is not None:
        return not isinstance(existing, _MissingOpsModule)
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def install_placeholder(parent: str, child: str, remedy: str) -> bool:
    name = f"{parent}.{child}"
    if importlib.util.find_spec(parent) is None or has_real_module(name):
        return False
    placeholder = sys.modules.get(name) or _MissingOpsModule(name, remedy)
    sys.modules[name] = placeholder
    if parent in sys.modules:
        setattr(sys.modules[parent], child, placeholder)
    return True


class UnsafeConfigError(ValueError):
    """A config the suite does not read: it holds Python tags, or a ``_BASE_`` outside the
    trusted folders; the message names the file and the fix."""


def safe_yaml(stream: str | IO[str], name: str) -> Any:
    """``yaml.safe_load``; a YAML error (a Python tag among them) as one line naming ``name``."""
    import yaml

    try:
        return yaml.safe_load(stream)
    except yaml.YAMLError as err:
        raise UnsafeConfigError(f"{name}: not a plain YAML file ({first_line(err)}); Python "
                                "tags are refused, since loading them runs code") from err


def first_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


class SafeLoading(types.ModuleType):
    """Stands for a module (``pickle``, ``torch``) in one engine module's globals: every attribute
    is the real module's, except ``load``, which is the suite's reader that never runs code."""

    def __init__(self, real: types.ModuleType, load: Callable[..., Any]) -> None:
        super().__init__(real.__name__)
        self._real, self.load = real, load

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def load_pickle(file: IO[bytes], **_: Any) -> Any:
    from pretrain.checkpoint import load_pickle_arrays

    return load_pickle_arrays(file)


def load_torch_file(file: Any, map_location: Any = None, **_: Any) -> Any:
    from pretrain.checkpoint import load_torch
    from pretrain.foreign import check_zip_bounds

    if isinstance(file, (str, os.PathLike)):  # a zip bomb is refused before torch unpacks it
        check_zip_bounds(Path(file))
    return load_torch(file, map_location)
