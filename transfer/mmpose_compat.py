"""The mmpose 1.3.2 (mmcv-lite 2.1.0, mmengine 0.10.7) side of :mod:`transfer.compat`: its shim
and its guards. Importing this module imports no engine.

mmcv_missing_ext
    mmcv-lite 2.1.0 has no compiled ops, yet mmpose 1.3.2 imports
    ``mmcv.ops.MultiScaleDeformableAttention`` at module level (``No module named 'mmcv._ext'``).
    Registers a placeholder ``mmcv._ext`` (with a ``__spec__``, which mmengine's
    ``mmcv_full_available()`` reads); every op raises :class:`MissingCompiledOpError` when called.
    Skipped when a real ``mmcv._ext`` (full mmcv) is importable.

Guards
------
mmengine_safe_checkpoints (``mmengine.runner.checkpoint``)
    Every ``CheckpointLoader`` scheme ends in a bare ``torch.load`` (``load_from``, ``resume``,
    the ``Pretrained`` init). The local scheme becomes ``load_torch``; the downloading schemes
    (http(s), pavi, s3, open-mmlab, mmcls, torchvision) are refused: the suite reads local files
    only. Schemes registered later (``transfer/mpii_checkpoint.py``'s allow-listed
    ``suite-resume://``) are untouched.
mmengine_safe_fileio (``mmengine.fileio.handlers``)
    ``mmengine.load`` reads ``.pkl`` with ``pickle.load`` and ``.yaml`` with ``yaml.Loader``
    (which constructs Python objects); they become the arrays-only unpickler and
    ``yaml.safe_load``.
mmengine_named_loads (``mmengine.fileio.io``)
    ``mmengine.load(path)`` hands the handlers a nameless buffer: an error from the readers above
    (or from json) is made to name ``path``.
"""
from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from typing import Any

from transfer.engine_shims import (
    UnsafeConfigError,
    first_line,
    install_placeholder,
    load_pickle,
    load_torch_file,
    safe_yaml,
)


def mmcv_missing_ext() -> bool:
    return install_placeholder(
        "mmcv", "_ext",
        "mmcv-lite has no compiled ops. Use models without them or install full mmcv 2.1.0 "
        "(the pins and the reasons for them: tools/bootstrap.sh).")


def load_from_local_weights_only(filename: str, map_location: Any = None) -> Any:
    # mmengine logs a scheme by its loader's name minus 'load_from_'
    return load_torch_file(os.path.expanduser(filename), map_location)


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
    module.PickleHandler.load_from_fileobj = lambda self, file, **_: load_pickle(file)
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

            text = first_line(err)
            named = text.replace("<stream>", str(file)).replace(UNNAMED_YAML, str(file))
            if isinstance(err, (InputError, UnsafeConfigError)) and str(file) in named:
                err.args = (named,)
                raise
            raise InputError(f"{file}: cannot be read ({text})") from err

    module.load = named_load
    for package in ("mmengine.fileio", "mmengine"):  # already bound when mmengine came first
        if getattr(sys.modules.get(package), "load", None) is load:
            sys.modules[package].load = named_load


MMPOSE_GUARDS: dict[str, Callable[[types.ModuleType], None]] = {
    "mmengine.runner.checkpoint": mmengine_safe_checkpoints,
    "mmengine.fileio.handlers": mmengine_safe_fileio,
    "mmengine.fileio.io": mmengine_named_loads,
}
