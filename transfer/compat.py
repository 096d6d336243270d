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

Guards: no engine loader runs code from a user's file
-----------------------------------------------------
detectron2 0.6, fvcore 0.1.5 and mmengine 0.10.7 read configs and checkpoints with loaders that
execute code from the file. Each guard below routes one of them through the suite's own readers
(``pretrain/checkpoint.py``: ``torch.load(weights_only=True)``, a zip archive's directory bounded
first, and for pickles an unpickler that admits only numpy arrays and plain containers), which
raise ``CheckpointError`` naming the file.
A guard is applied when its module is first imported (at once if it already is), so importing this
module imports no engine.

detectron2_safe_yaml (``detectron2.config.config``)
    ``CfgNode.load_yaml_with_base`` falls back to ``yaml.unsafe_load`` (Python tags run code) and
    follows any ``_BASE_`` (absolute, ``../``, a URL). Replaced by :func:`load_detectron2_yaml`:
    ``yaml.safe_load`` only, and every ``_BASE_`` resolved by :func:`detectron2_base`, which admits
    only files whose real path lies in detectron2's model zoo or ``transfer/configs/``.
detectron2_safe_checkpoints (``detectron2.checkpoint.detection_checkpoint``)
    ``DetectionCheckpointer._load_file`` reads ``.pkl`` with ``pickle.load`` and ``.pyth`` with a
    bare ``torch.load``. The module's ``pickle`` and ``torch`` become :class:`_SafeLoading`
    stand-ins whose ``load`` is the suite's reader.
fvcore_safe_checkpoints (``fvcore.common.checkpoint``)
    ``Checkpointer._load_file`` (every other file: ``.pth``) is a bare ``torch.load``; it becomes
    ``load_torch``. With the guard above, that is every file detectron2 loads: ``MODEL.WEIGHTS``,
    ``--resume`` and ``--eval-only``. ``Checkpointer.get_checkpoint_file`` refuses a
    ``last_checkpoint`` naming a file outside the run folder.
detectron2_safe_proposals (``detectron2.data.build``)
    Precomputed proposal files (``DATASETS.PROPOSAL_FILES_*``) are read with ``pickle.load``;
    its ``pickle`` becomes the arrays-only stand-in.
mmengine_safe_checkpoints (``mmengine.runner.checkpoint``)
    Every ``CheckpointLoader`` scheme ends in a bare ``torch.load`` (``load_from``, ``resume``,
    the ``Pretrained`` init). The local scheme becomes ``load_torch``; the downloading schemes
    (http(s), pavi, s3, open-mmlab, mmcls, torchvision) are refused: the suite reads local files
    only. Schemes registered later (``transfer/mpii_checkpoint.py``'s allow-listed ``suite-resume://``)
    are untouched.
mmengine_safe_fileio (``mmengine.fileio.handlers``)
    ``mmengine.load`` reads ``.pkl`` with ``pickle.load`` and ``.yaml`` with ``yaml.Loader``
    (which constructs Python objects); they become the arrays-only unpickler and
    ``yaml.safe_load``.
mmengine_named_loads (``mmengine.fileio.io``)
    ``mmengine.load(path)`` hands the handlers a nameless buffer: an error from the readers above
    (or from json) is made to name ``path``.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings
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
        "(the pins and the reasons for them: tools/bootstrap.sh).")


# ----------------------------------------------------------------------------- guards
class UnsafeConfigError(ValueError):
    """A config the suite does not read: it holds Python tags, or a ``_BASE_`` outside the
    trusted folders; the message names the file and the fix."""


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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UnsafeConfigError(f"{path}: cannot be read ({_first_line(err)})") from err
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


def safe_yaml(stream: str | IO[str], name: str) -> Any:
    """``yaml.safe_load``; a YAML error (a Python tag among them) as one line naming ``name``."""
    import yaml

    try:
        return yaml.safe_load(stream)
    except yaml.YAMLError as err:
        raise UnsafeConfigError(f"{name}: not a plain YAML file ({_first_line(err)}); Python "
                                "tags are refused, since loading them runs code") from err


def _merge_into(new: dict[str, Any], old: dict[str, Any]) -> None:
    """fvcore's base-config merge: nested mappings merge, anything else replaces."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            _merge_into(value, old[key])
        else:
            old[key] = value


def _first_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


class _SafeLoading(types.ModuleType):
    """Stands for a module (``pickle``, ``torch``) in one engine module's globals: every attribute
    is the real module's, except ``load``, which is the suite's reader that never runs code."""

    def __init__(self, real: types.ModuleType, load: Callable[..., Any]) -> None:
        super().__init__(real.__name__)
        self._real, self.load = real, load

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _load_pickle(file: IO[bytes], **_: Any) -> Any:
    from pretrain.checkpoint import load_pickle_arrays

    return load_pickle_arrays(file)


def _load_torch(file: Any, map_location: Any = None, **_: Any) -> Any:
    from pretrain.checkpoint import load_torch
    from pretrain.foreign import check_zip_bounds

    if isinstance(file, (str, os.PathLike)):  # a zip bomb is refused before torch unpacks it
        check_zip_bounds(Path(file))
    return load_torch(file, map_location)


def detectron2_safe_yaml(module: types.ModuleType) -> None:
    module.CfgNode.load_yaml_with_base = classmethod(
        lambda cls, filename, allow_unsafe=False: load_detectron2_yaml(filename))


def detectron2_safe_checkpoints(module: types.ModuleType) -> None:
    module.pickle = _SafeLoading(module.pickle, _load_pickle)
    module.torch = _SafeLoading(module.torch, _load_torch)


def detectron2_safe_proposals(module: types.ModuleType) -> None:
    module.pickle = _SafeLoading(module.pickle, _load_pickle)


def fvcore_safe_checkpoints(module: types.ModuleType) -> None:
    checkpointer = module.Checkpointer
    checkpointer._load_file = lambda self, f: _load_torch(f)
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


def load_from_local_weights_only(filename: str, map_location: Any = None) -> Any:
    # mmengine logs a scheme by its loader's name minus 'load_from_'
    return _load_torch(os.path.expanduser(filename), map_location)


def load_from_refused(filename: str, map_location: Any = None) -> Any:
    from pretrain.checkpoint import CheckpointError

    raise CheckpointError(f"{filename}: the suite reads local checkpoint files only (nothing is "
                          "downloaded at run time); download it yourself and pass the file")


def mmengine_safe_checkpoints(module: types.ModuleType) -> None:
    loader = module.CheckpointLoader
    for prefix in list(loader._schemes):
        loader.register_scheme(prefix, load_from_refused if prefix else
                               load_from_local_weights_only, force=True)


def mmengine_safe_fileio(module: types.ModuleType) -> None:
    module.PickleHandler.load_from_fileobj = lambda self, file, **_: _load_pickle(file)
    module.YamlHandler.load_from_fileobj = lambda self, file, **_: safe_yaml(
        file, str(getattr(file, "name", UNNAMED_YAML)))


UNNAMED_YAML = "a YAML file read by mmengine"


def mmengine_named_loads(module: types.ModuleType) -> None:
    load = module.load

    def named_load(file: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return load(file, *args, **kwargs)
        except ValueError as err:  # the suite's readers' errors, json's, a wrong encoding
            if not isinstance(file, (str, os.PathLike)):
                raise
            from pretrain.cli import InputError

            text = _first_line(err)
            named = text.replace("<stream>", str(file)).replace(UNNAMED_YAML, str(file))
            if isinstance(err, (InputError, UnsafeConfigError)) and str(file) in named:
                err.args = (named,)
                raise
            raise InputError(f"{file}: cannot be read ({text})") from err

    module.load = named_load
    for package in ("mmengine.fileio", "mmengine"):  # already bound when mmengine came first
        if getattr(sys.modules.get(package), "load", None) is load:
            sys.modules[package].load = named_load


GUARDS: dict[str, Callable[[types.ModuleType], None]] = {
    "detectron2.config.config": detectron2_safe_yaml,
    "detectron2.checkpoint.detection_checkpoint": detectron2_safe_checkpoints,
    "detectron2.data.build": detectron2_safe_proposals,
    "fvcore.common.checkpoint": fvcore_safe_checkpoints,
    "mmengine.runner.checkpoint": mmengine_safe_checkpoints,
    "mmengine.fileio.handlers": mmengine_safe_fileio,
    "mmengine.fileio.io": mmengine_named_loads,
}


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
