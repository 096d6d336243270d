"""What produced each stage, and what a rerun does with it.

Each stage leaves a marker, ``<out>/state/<backbone>__<stage>.json``: its status (running, done,
failed, skipped) and its *identity*:

- ``command``: its whole command line, every flag that defines the stage (budget, steps, data,
  seeds, names);
- ``inputs``: the sha256 of each checkpoint it reads (its backbone, pretrained here or given);
- ``code``: the code version (git commit, ``+dirty`` for uncommitted changes).

A rerun of the suite, per stage (:func:`review`):

- **skips** it when its marker says done, the identity it would have now is the recorded one and
  its outputs exist;
- **reruns** it when its command or an input differs, or it never finished: a stage whose command
  or inputs changed starts afresh, its folder (its rows, its run) removed first; a pretraining
  stage killed or failed with the same command continues its run with ``--resume``;
- **refuses** (one line, before anything runs) when only the code version differs, since the
  same command may now compute something else: ``--code-change rerun`` reruns such stages.

Every stage writes its rows to its own ``<folder>/leaderboard.csv``; ``<out>/leaderboard.csv`` is
rebuilt from the stages that are done (:func:`merge_rows`), so a stage rerun replaces its rows and
a stale result never stays beside a new one.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from benchmarks.results.leaderboard import read_rows, write_rows
from benchmarks.runner.stages import Stage, after_of, log_path
from pretrain.cli import InputError
from pretrain.files import atomic_write, file_sha256

BOARD_NAME = "leaderboard.csv"  # each stage's rows, in its folder
STATE_FILE = "last_state.pt"  # a pretraining run's resumable state (pretrain/train.py)
STATUSES = ("running", "done", "failed", "skipped")


class MarkerError(InputError):
    """A marker file that is not one the suite wrote, or a rerun the suite refuses."""


def marker_path(out: Path, stage: Stage) -> Path:
    """The stage's marker: ``<out>/state/<backbone>__<stage>.json``."""
    return out / "state" / f"{stage.backbone}__{stage.name}.json"


def read_marker(out: Path, stage: Stage) -> dict | None:
    """The stage's marker record, None if it has none; a tampered one is a :class:`MarkerError`."""
    path = marker_path(out, stage)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MarkerError(f"{path}: not a stage marker the suite wrote ({err}); delete it to "
                          "rerun that stage") from err
    if (not isinstance(record, dict) or record.get("status") not in STATUSES
            or not isinstance(record.get("identity", {}), dict)):
        raise MarkerError(f"{path}: not a stage marker the suite wrote (no valid status); delete "
                          "it to rerun that stage")
    return record


class Hashes:
    """sha256 of checkpoint files, each read once per suite run."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def __call__(self, path: str) -> str | None:
        if path not in self._known and Path(path).is_file():
            self._known[path] = file_sha256(path)
        return self._known.get(path)


def identity(stage: Stage, hashes: Hashes, code: str) -> dict:
    """What the stage would be now: its command, its input checkpoints' hashes, the code."""
    return {"command": list(stage.argv),
            "inputs": {stage.needs: hashes(stage.needs)} if stage.needs else {},
            "code": code}


def difference(recorded: dict, now: dict) -> str | None:
    """What differs between two identities, in words (None: the same stage)."""
    if recorded.get("command") != now["command"]:
        old, new = recorded.get("command") or [], now["command"]
        gone = [a for a in old if a not in new][:4]
        added = [a for a in new if a not in old][:4]
        return f"its command changed (now {' '.join(added) or '-'}; was {' '.join(gone) or '-'})"
    if recorded.get("inputs") != now["inputs"]:
        return "its input checkpoint changed"
    if recorded.get("code") != now["code"]:
        return f"it was made by code {recorded.get('code')}, this is {now['code']}"
    return None


def review(stages: Sequence[Stage], out: Path, code: str, code_change: str = "refuse",
           hashes: Hashes | None = None) -> tuple[dict[int, dict], dict[int, str]]:
    """({index: marker} of the stages to skip, {index: why it reruns} of recorded stages that
    differ now). A stage after one that reruns reruns too. Raises :class:`MarkerError` for a done
    stage whose only difference is the code version, unless ``code_change == "rerun"``."""
    hashes = hashes or Hashes()
    after = after_of(stages)
    done: dict[int, dict] = {}
    changed: dict[int, str] = {}
    for i, stage in enumerate(stages):
        record = read_marker(out, stage)
        if record is None or record["status"] != "done":
            continue
        if after[i] is not None and after[i] not in done:
            changed[i] = "its input is being remade"
            continue
        why = difference(record.get("identity", {}), identity(stage, hashes, code))
        if why and why.startswith("it was made by code") and code_change != "rerun":
            raise MarkerError(f"{stage.backbone}: {stage.name} in {out}: {why}; pass "
                              "--code-change rerun to remake such stages, or choose another --out")
        if why is None and not all(Path(p).exists() for p in stage.outputs):
            why = "its output is missing"
        if why:
            changed[i] = why
        else:
            done[i] = record
    return done, changed


def prepare(out: Path, stage: Stage, now: dict) -> list[str]:
    """Ready the stage's folder for its run; return its command line. A stage whose recorded
    identity differs (or that has no marker) starts afresh in an emptied folder; a pretraining
    run with the same identity and a saved state continues with ``--resume``."""
    record = read_marker(out, stage)
    folder = Path(stage.folder) if stage.folder else None
    same = record is not None and difference(record.get("identity", {}), now) is None
    if folder is not None and folder.exists() and not same:
        if not folder.resolve().is_relative_to(out.resolve()):
            raise MarkerError(f"{folder}: a stage folder outside --out {out}; not removed")
        shutil.rmtree(folder)
    write_marker(out, stage, status="running", identity=now)
    if same and stage.resumable and folder is not None and (folder / STATE_FILE).is_file():
        return [*stage.argv, "--resume", str(folder)]
    return list(stage.argv)


def write_marker(out: Path, stage: Stage, **result: object) -> dict:
    """Write the stage's marker: its backbone, stage, log and ``result``; returns the record."""
    record = {"backbone": stage.backbone, "stage": stage.name,
              "log": str(log_path(out, stage)), **result}
    atomic_write(marker_path(out, stage),
                 lambda f: f.write(json.dumps(record, indent=1).encode()))
    return record


def stage_board(stage: Stage) -> Path | None:
    """The stage's own leaderboard file (None for a stage that writes no rows)."""
    return Path(stage.folder) / BOARD_NAME if stage.folder and stage.rows else None


def merge_rows(out: Path, stages: Sequence[Stage], records: Sequence[dict]) -> Path:
    """``<out>/leaderboard.csv`` rebuilt from the rows of the stages that are done."""
    rows = []
    for stage, record in zip(stages, records):
        board = stage_board(stage)
        if record.get("status") == "done" and board is not None and board.exists():
            rows += read_rows(board)[1]
    fresh = out / "state" / "leaderboard.csv"
    fresh.unlink(missing_ok=True)
    write_rows(fresh, rows)
    path = out / "leaderboard.csv"
    fresh.replace(path)
    return path
