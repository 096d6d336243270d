"""The suite's stages: what one runs (:class:`Stage`), the stage graph (which stage makes the file
another needs) and the markers and logs every executor leaves in the run folder, so that a rerun
skips finished stages whichever executor ran them.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.files import atomic_write

ROOT = Path(__file__).resolve().parents[2]  # the repository: stages run there, as a user would


@dataclass
class Stage:
    backbone: str
    name: str
    argv: list[str]
    needs: str | None = None                 # a file the stage reads, made by an earlier stage
    outputs: list[str] = field(default_factory=list)
    gpus: int = 1                            # GPUs the stage uses (a cluster job's request)


def after_of(stages: Sequence) -> list[int | None]:
    """For each stage, the index of the stage making the file it needs (None: it waits for
    nothing)."""
    made_by = {path: i for i, stage in enumerate(stages) for path in stage.outputs}
    return [made_by.get(stage.needs or "") for stage in stages]


def log_path(out: Path, stage: Stage) -> Path:
    """The stage's log: ``<out>/logs/<backbone>/<stage>.log``."""
    return out / "logs" / stage.backbone / f"{stage.name}.log"


def marker_path(out: Path, stage: Stage) -> Path:
    """The stage's marker: ``<out>/state/<backbone>__<stage>.json`` (done, failed or skipped)."""
    return out / "state" / f"{stage.backbone}__{stage.name}.json"


def done_records(stages: list[Stage], out: Path) -> dict[int, dict]:
    """{index: marker record} of the stages whose marker says done (a rerun skips them)."""
    records = {}
    for i, stage in enumerate(stages):
        marker = marker_path(out, stage)
        record = json.loads(marker.read_text()) if marker.exists() else {}
        if record.get("status") == "done":
            records[i] = record
    return records


def finish(out: Path, stage: Stage, records: dict[int, dict], i: int, **result) -> None:
    """Record a stage's end, in memory and as its marker file."""
    record = {"backbone": stage.backbone, "stage": stage.name,
              "log": str(log_path(out, stage)), **result}
    atomic_write(marker_path(out, stage),
                 lambda f: f.write(json.dumps(record, indent=1).encode()))
    records[i] = record


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log, each cut to 200 characters."""
    text = path.read_text(errors="replace").strip().splitlines()
    return [line.strip()[:200] for line in text[-lines:]]
