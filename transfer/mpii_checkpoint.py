"""The MPII run folder's Runner checkpoints (``--resume``, ``--eval-only``), read without running
code from them.

mmengine's Runner writes ``iter_N.pth`` with numpy arrays and scalars and its log buffers
(``HistoryBuffer``, whose statistics methods pickle as ``getattr(HistoryBuffer, name)``) beside the
tensors, so torch's ``weights_only`` reader refuses them as they are (and mmengine 0.10 then fails
to resume). They are read by the suite's one reader of torch files,
:func:`pretrain.checkpoint.load_torch`: torch's ``weights_only`` unpickler, widened by exactly
:data:`RUNNER_CHECKPOINT_GLOBALS`. That is the checkpoint reader's allow-list
(:data:`pretrain.foreign.TRAINING_FILE_GLOBALS`: numpy's reconstructors, scalars and dtypes) with
mmengine's real ``HistoryBuffer`` in place of its attribute-only stand-in, since a resumed Runner
needs working log buffers: the class is built by ``__new__`` and its attributes set, none of its
code runs, and the only ``getattr`` a file may call returns one of its statistics methods. Any
other object in the file is refused in one line naming it.

mmengine loads a checkpoint through its ``CheckpointLoader`` schemes; ``transfer/compat.py`` makes
the local one plain ``weights_only``, so the run folder's file is handed to mmengine under the
scheme :data:`RESUME_SCHEME`, whose loader is :func:`load_runner_checkpoint`.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from mmengine.logging import HistoryBuffer

from pretrain.checkpoint import load_torch
from pretrain.foreign import TRAINING_FILE_GLOBALS
from transfer.mpii_config import MpiiPoseError

RESUME_SCHEME = "suite-resume://"
_STAND_INS = ("mmengine.logging.history_buffer.HistoryBuffer", "builtins.getattr")


def _history_buffer_method(owner: Any, name: Any) -> Any:
    """The only ``getattr`` a Runner checkpoint may call: a HistoryBuffer statistics method."""
    allowed = {"min", "max", "mean", "current", *HistoryBuffer._statistics_methods}
    if owner is not HistoryBuffer or name not in allowed:
        raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not allowed")
    return getattr(HistoryBuffer, name)


RUNNER_CHECKPOINT_GLOBALS: list[Any] = [
    *(entry for entry in TRAINING_FILE_GLOBALS if entry[1] not in _STAND_INS),
    (HistoryBuffer, _STAND_INS[0]), (_history_buffer_method, _STAND_INS[1]),
]


def load_runner_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A Runner checkpoint of this driver, read with :data:`RUNNER_CHECKPOINT_GLOBALS` admitted
    and nothing else (``CheckpointError``, one line naming the refused object, otherwise)."""
    return load_torch(path, map_location, admit=RUNNER_CHECKPOINT_GLOBALS)


def load_from_suite_resume(filename: str, map_location: Any = None) -> dict[str, Any]:
    # mmengine logs the scheme's name as this function's name minus 'load_from_'
    return load_runner_checkpoint(filename[len(RESUME_SCHEME):], map_location)


def resume_checkpoint(out_dir: Path, flag: str = "--resume") -> str:
    """The run folder's last Runner checkpoint (named by mmengine's ``last_checkpoint`` and lying
    in the folder), as the name mmengine reads with :func:`load_runner_checkpoint`."""
    from mmengine.runner import CheckpointLoader

    last = out_dir / "last_checkpoint"  # written by mmengine's CheckpointHook
    if not last.is_file():
        raise MpiiPoseError(f"{flag}: {out_dir} has no checkpoint to "
                            f"{'resume from' if flag == '--resume' else 'evaluate'} "
                            f"({last} is missing); run without {flag}")
    path = Path(last.read_text().strip())
    if not path.is_file():
        raise MpiiPoseError(f"{flag}: {last} names {path}, which does not exist")
    if not path.resolve().is_relative_to(out_dir.resolve()):
        raise MpiiPoseError(f"{flag}: {last} names {path}, outside the run folder; a run's "
                            "checkpoints are read from its own folder only")
    CheckpointLoader.register_scheme(RESUME_SCHEME, load_from_suite_resume, force=True)
    return RESUME_SCHEME + str(path)


def checkpoint_path(name: str) -> str:
    """The file behind a name from :func:`resume_checkpoint` (for messages and records)."""
    return name.removeprefix(RESUME_SCHEME)
