"""The suite's stages: what one runs (:class:`Stage`), the stage graph (which stage makes the file
another needs) and the log every executor leaves in the run folder (the markers:
:mod:`benchmarks.runner.markers`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: stages run there, as a user would


@dataclass
class Stage:
    backbone: str
    name: str
    argv: list[str]
    needs: str | None = None                 # a file the stage reads, made by an earlier stage
    outputs: list[str] = field(default_factory=list)
    gpus: int = 1                            # GPUs the stage uses (a cluster job's request)
    folder: str | None = None                # its --out (run folder), owned by the suite
    resumable: bool = False                  # continues a killed run with --resume (pretraining)
    rows: bool = True                        # writes leaderboard rows (<folder>/leaderboard.csv)


def after_of(stages: Sequence) -> list[int | None]:
    """For each stage, the index of the stage making the file it needs (None: it waits for
    nothing)."""
    made_by = {path: i for i, stage in enumerate(stages) for path in stage.outputs}
    return [made_by.get(stage.needs or "") for stage in stages]


def log_path(out: Path, stage: Stage) -> Path:
    """The stage's log: ``<out>/logs/<backbone>/<stage>.log``."""
    return out / "logs" / stage.backbone / f"{stage.name}.log"


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log, each cut to 200 characters."""
    text = path.read_text(errors="replace").strip().splitlines()
    return [line.strip()[:200] for line in text[-lines:]]
