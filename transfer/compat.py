"""Every run-time workaround the suite needs for detectron2 0.6 and mmpose 1.3.2, in one place.

Import this module (or call :func:`apply`) before importing detectron2 or mmpose. Each shim below
says what breaks and on which versions, and is a no-op when the installed version does not need it.
Third-party sources on disk are never edited.

Shims (each documented where it lives)
--------------------------------------
numpy_aliases, pillow_linear, detectron2_missing_C: :mod:`transfer.detectron2_compat`;
mmcv_missing_ext: :mod:`transfer.mmpose_compat`; the placeholder of a compiled extension:
:mod:`transfer.engine_shims`.

Guards: no engine loader runs code from a user's file
-----------------------------------------------------
detectron2 0.6, fvcore 0.1.5 and mmengine 0.10.7 read configs and checkpoints with loaders that
execute code from the file. Each guard below routes one of them through the suite's own readers
(``pretrain/checkpoint.py``: ``torch.load(weights_only=True)``, a zip archive's directory bounded
first, and for pickles an unpickler that admits only numpy arrays and plain containers), which
raise ``CheckpointError`` naming the file.
A guard is applied when its module is first imported (at once if it already is), so importing this
module imports no engine.

The guards of detectron2 and fvcore are :mod:`transfer.detectron2_compat`'s
(``DETECTRON2_GUARDS``), those of mmengine :mod:`transfer.mmpose_compat`'s (``MMPOSE_GUARDS``); this
module installs them all and keeps every name the drivers and tests import from it.
"""
from __future__ import annotations

import importlib.abc
import sys
import types
from collections.abc import Callable
from typing import Any

import transfer.quiet  # noqa: F401  (known library warnings silenced, before any engine)
from transfer.detectron2_compat import (  # noqa: F401  (names importable from transfer.compat)
    BASE_KEY,
    DETECTRON2_GUARDS,
    REPO_CONFIGS,
    ZOO_PREFIX,
    config_roots,
    detectron2_base,
    detectron2_missing_C,
    detectron2_zoo,
    load_detectron2_yaml,
    numpy_aliases,
    pillow_linear,
)
from transfer.engine_shims import (  # noqa: F401  (names importable from transfer.compat)
    MissingCompiledOpError,
    UnsafeConfigError,
    safe_yaml,
)
from transfer.mmpose_compat import (  # noqa: F401  (names importable from transfer.compat)
    MMPOSE_GUARDS,
    load_from_local_weights_only,
    load_from_refused,
    mmcv_missing_ext,
)

GUARDS: dict[str, Callable[[types.ModuleType], None]] = {**DETECTRON2_GUARDS, **MMPOSE_GUARDS}


class _GuardOnImport(importlib.abc.MetaPathFinder):
    """Applies a pending guard to its module right after the module is first executed."""

    def __init__(self) -> None:
        self.pending: dict[str, Callable[[types.ModuleType], None]] = {}

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        guard, execute = self.pending.pop(name), spec.loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            execute(module)
            guard(module)

        spec.loader.exec_module = exec_module
        return spec


def install_guards() -> list[str]:
    """Apply each guard now (module already imported) or on its first import; return the
    guarded module names."""
    finder = next((f for f in sys.meta_path if isinstance(f, _GuardOnImport)), None)
    if finder is None:
        finder = _GuardOnImport()
        sys.meta_path.insert(0, finder)
    for name, guard in GUARDS.items():
        if name in sys.modules:
            guard(sys.modules[name])
        else:
            finder.pending[name] = guard
    return list(GUARDS)


_applied: dict[str, Any] | None = None


def apply() -> dict[str, Any]:
    """Apply every shim that the installed versions need (idempotent); return what was done."""
    global _applied
    if _applied is None:
        _applied = {
            "numpy_aliases": numpy_aliases(),
            "pillow_linear": pillow_linear(),
            "detectron2_missing_C": detectron2_missing_C(),
            "mmcv_missing_ext": mmcv_missing_ext(),
            "guards": install_guards(),
        }
    return _applied


apply()
