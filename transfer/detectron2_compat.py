"""The detectron2 0.6 (and fvcore 0.1.5) side of :mod:`transfer.compat`: its shims and its
guards. Importing this module imports no engine.

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

Guards
------
detectron2_safe_yaml (``detectron2.config.config``)
    ``CfgNode.load_yaml_with_base`` falls back to ``yaml.unsafe_load`` (Python tags run code) and
    follows any ``_BASE_`` (absolute, ``../``, a URL). Replaced by :func:`load_detectron2_yaml`:
    ``yaml.safe_load`` only, and every ``_BASE_`` resolved by :func:`detectron2_base`, which admits
    only files whose real path lies in detectron2's model zoo or ``transfer/configs/``.
detectron2_safe_checkpoints (``detectron2.checkpoint.detection_checkpoint``)
    ``DetectionCheckpointer._load_file`` reads ``.pkl`` with ``pickle.load`` and ``.pyth`` with a
    bare ``torch.load``. The module's ``pickle`` and ``torch`` become :class:`SafeLoading`
    stand-ins whose ``load`` is the suite's reader.
fvcore_safe_checkpoints (``fvcore.common.checkpoint``)
    ``Checkpointer._load_file`` (every other file: ``.pth``) is a bare ``torch.load``; it becomes
    ``load_torch``. With the guard above, that is every file detectron2 loads: ``MODEL.WEIGHTS``,
    ``--resume`` and ``--eval-only``. ``Checkpointer.get_checkpoint_file`` refuses a
    ``last_checkpoint`` naming a file outside the run folder.
detectron2_safe_proposals (``detectron2.data.build``)
    Precomputed proposal files (``DATASETS.PROPOSAL_FILES_*``) are read with ``pickle.load``;
    its ``pickle`` becomes the arrays-only stand-in.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transfer.config_guard import check_config_chain
from transfer.engine_shims import (
    SafeLoading,
    UnsafeConfigError,
    first_line,
    install_placeholder,
    load_pickle,
    load_torch_file,
    safe_yaml,
)


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
    installed = install_placeholder(
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


REPO_CONFIGS = Path(__file__).resolve().parent / "configs"
ZOO_PREFIX = "model_zoo:"
BASE_KEY = "_BASE_"


def detectron2_zoo() -> Path:
    """detectron2's model-zoo config folder (found without importing detectron2)."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None or spec.origin is None:
        raise UnsafeConfigError("detectron2 is not installed, so it has no model zoo")
    return Path(spec.origin).resolve().parent / "model_zoo" / "configs"


def config_roots() -> list[Path]:
    """The folders a detectron2 ``_BASE_`` may point into (real paths)."""
    return [detectron2_zoo(), REPO_CONFIGS]


def detectron2_base(base: Any, config: Path) -> Path:
    """The file a ``_BASE_`` in ``config`` names: ``model_zoo:<path>`` (in detectron2's zoo) or a
    path relative to ``config``. Its real path (links and ``..`` resolved) must lie in
    :func:`config_roots`."""
    if not isinstance(base, str) or not base:
        raise UnsafeConfigError(f"{config}: {BASE_KEY} must name a config file, got {base!r}")
    if base.startswith(ZOO_PREFIX):
        candidate = detectron2_zoo() / base[len(ZOO_PREFIX):]
    else:
        candidate = Path(config).parent / os.path.expanduser(base)
    real = candidate.resolve()
    if not any(real.is_relative_to(root) for root in config_roots()):
        raise UnsafeConfigError(
            f"{config}: {BASE_KEY} {base!r} resolves to {real}, outside detectron2's model zoo "
            "and transfer/configs/; only bases there are followed (review the file and copy it "
            "into transfer/configs/)")
    if not real.is_file():
        raise UnsafeConfigError(f"{config}: {BASE_KEY} {base!r}: no such file {real}")
    return real


def load_detectron2_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """``path`` read with ``yaml.safe_load`` and merged over its ``_BASE_`` chain (each base
    checked by :func:`detectron2_base`), as detectron2's ``load_yaml_with_base`` returns it."""
    path = Path(path)
    check_config_chain(path, detectron2_base)  # size, aliases, _BASE_ loops and depth
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UnsafeConfigError(f"{path}: cannot be read ({first_line(err)})") from err
    doc = safe_yaml(text, str(path))
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UnsafeConfigError(f"{path}: expected a mapping of config keys, got "
                                f"{type(doc).__name__}")
    if BASE_KEY not in doc:
        return doc
    bases = doc.pop(BASE_KEY)
    merged: dict[str, Any] = {}
    for base in bases if isinstance(bases, list) else [bases]:
        _merge_into(load_detectron2_yaml(detectron2_base(base, path)), merged)
    _merge_into(doc, merged)
    return merged


def _merge_into(new: dict[str, Any], old: dict[str, Any]) -> None:
    """fvcore's base-config merge: nested mappings merge, anything else replaces."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            _merge_into(value, old[key])
        else:
            old[key] = value


def detectron2_safe_yaml(module: types.ModuleType) -> None:
    module.CfgNode.load_yaml_with_base = classmethod(
        lambda cls, filename, allow_unsafe=False: load_detectron2_yaml(filename))


def detectron2_safe_checkpoints(module: types.ModuleType) -> None:
    module.pickle = SafeLoading(module.pickle, load_pickle)
    module.torch = SafeLoading(module.torch, load_torch_file)


def detectron2_safe_proposals(module: types.ModuleType) -> None:
    module.pickle = SafeLoading(module.pickle, load_pickle)


def fvcore_safe_checkpoints(module: types.ModuleType) -> None:
    checkpointer = module.Checkpointer
    checkpointer._load_file = lambda self, f: load_torch_file(f)
    listed = checkpointer.get_checkpoint_file

    def get_checkpoint_file(self: Any) -> str:
        path = listed(self)
        if path and not Path(path).resolve().is_relative_to(Path(self.save_dir).resolve()):
            from pretrain.checkpoint import CheckpointError

            raise CheckpointError(f"{Path(self.save_dir) / 'last_checkpoint'} names {path}, "
                                  "outside the run folder; a run's checkpoints are read from "
                                  "its own folder only")
        return path

    checkpointer.get_checkpoint_file = get_checkpoint_file


DETECTRON2_GUARDS: dict[str, Callable[[types.ModuleType], None]] = {
    "detectron2.config.config": detectron2_safe_yaml,
    "detectron2.checkpoint.detection_checkpoint": detectron2_safe_checkpoints,
    "detectron2.data.build": detectron2_safe_proposals,
    "fvcore.common.checkpoint": fvcore_safe_checkpoints,
}
