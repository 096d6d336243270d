"""Every run-time workaround the suite needs for detectron2 0.6 and mmpose 1.3.2, in one place.

Import this module (or call :func:`apply`) before importing detectron2 or mmpose. Each shim below
says what breaks and on which versions, and is a no-op when the installed version does not need it.
Third-party sources on disk are never edited.

Shims
-----
numpy_aliases
    numpy >= 1.24 removed ``np.int``, ``np.float``, ``np.bool``, ``np.str`` and ``np.object``;
    detectron2 0.6 still uses some of them (e.g. ``data/build.py``). Restores the builtin aliases
    only where numpy lacks them.
pillow_linear
    Pillow >= 10 removed ``Image.LINEAR``; detectron2 0.6 uses it as a default argument, and
    ``import detectron2.data`` fails. Restores it as ``Image.BILINEAR`` (what it always meant).
detectron2_missing_C
    The pb1-detectron2 0.6 sdist ships no C++ sources, so ``detectron2._C`` does not exist, yet
    four modules import it at module level (deform_conv, roi_align_rotated, rotated_boxes,
    fast_eval_api).
    Mask R-CNN R50-FPN/C4 never calls it (ROIAlign and NMS come from torchvision). Registers a
    placeholder whose every op raises :class:`MissingCompiledOpError` naming the op when called.
    Its three build-information functions (``get_compiler_version``, ``get_cuda_version``,
    ``has_cuda``) answer instead, because ``detectron2.engine.default_setup`` logs them through
    ``collect_env_info()`` as soon as ``import detectron2._C`` succeeds.
    Skipped when a real ``detectron2._C`` (an official build) is importable.
mmcv_missing_ext
    mmcv-lite 2.1.0 has no compiled ops, yet mmpose 1.3.2 imports
    ``mmcv.ops.MultiScaleDeformableAttention`` at module level (``No module named 'mmcv._ext'``).
    Registers a placeholder ``mmcv._ext`` (with a ``__spec__``, which mmengine's
    ``mmcv_full_available()`` reads); every op raises :class:`MissingCompiledOpError` when called.
    Skipped when a real ``mmcv._ext`` (full mmcv) is importable.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any


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


def _has_real_module(name: str) -> bool:
    existing = sys.modules.get(name)
    if existing is not None:
        return not isinstance(existing, _MissingOpsModule)
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _install_placeholder(parent: str, child: str, remedy: str) -> bool:
    name = f"{parent}.{child}"
    if importlib.util.find_spec(parent) is None or _has_real_module(name):
        return False
    placeholder = sys.modules.get(name) or _MissingOpsModule(name, remedy)
    sys.modules[name] = placeholder
    if parent in sys.modules:
        setattr(sys.modules[parent], child, placeholder)
    return True


def numpy_aliases() -> list[str]:
    import numpy as np

    restored = []
    for alias, builtin in {"int": int, "float": float, "bool": bool, "str": str,
                           "object": object}.items():
        try:
            with warnings.catch_warnings():  # numpy 2 warns about a future meaning of np.str
                warnings.simplefilter("ignore")
                getattr(np, alias)
        except AttributeError:
            setattr(np, alias, builtin)
            restored.append(f"np.{alias}")
    return restored


def pillow_linear() -> bool:
    from PIL import Image

    if hasattr(Image, "LINEAR"):
        return False
    Image.LINEAR = Image.BILINEAR
    return True


def detectron2_missing_C() -> bool:
    installed = _install_placeholder(
        "detectron2", "_C",
        "The pb1-detectron2 0.6 package has no C++ extension (deformable conv, rotated boxes, "
        "the fast COCO evaluator). Use configs without these ops, COCOEvaluator(use_fast_impl="
        "False), or install an official detectron2 build.")
    if installed:  # build information read by detectron2.utils.collect_env.collect_env_info()
        placeholder = sys.modules["detectron2._C"]
        placeholder.get_compiler_version = lambda: "none (placeholder detectron2._C)"
        placeholder.get_cuda_version = lambda: "none (placeholder detectron2._C)"
        placeholder.has_cuda = lambda: False
    return installed


def mmcv_missing_ext() -> bool:
    return _install_placeholder(
        "mmcv", "_ext",
        "mmcv-lite has no compiled ops. Use models without them or install full mmcv 2.1.0 "
        "(see ../shared/DEPENDENCIES.md).")


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
        }
    return _applied


apply()
