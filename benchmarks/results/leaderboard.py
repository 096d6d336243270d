"""The leaderboard: one CSV, one row per measured value, keyed by everything that makes it mean
one thing: the backbone (file hash, pretraining data, epochs and seed), the task, the protocol
(fixed, finetune, linear, kNN), the recipe (the engine config or probe recipe by name:
``R50-C4-1x``, ``R50-FPN-1x``, ``mpii-256x256-210e``, ``linear-adamw-100e``, a CPU config by its
name), the budget and its deviating settings, the metric, the seed and the source.

The budget is ``full`` only when a published recipe ran unchanged (:func:`run_identity`); otherwise
it is the suite's budget that started the run (``cpu`` or ``smoke``, from the environment variable
``BENCHMARK_BUDGET`` the suite sets) or ``custom``, and ``deviations`` lists what differed
(validation subset, iterations, epochs, image size, the embedded synthetic data). A quick run thus
never replaces a full one: they differ in budget and deviations, so their keys differ.

An older file, written before rows carried a recipe and budget, is read: its rows get the budget
``unrecorded`` (never shown beside a published number) and an empty recipe, and keep them when the
file is next written.

Writers from several processes at once are safe: every write takes an exclusive ``fcntl`` lock on
``<csv>.lock``, reads the current file, replaces the rows it re-measures (same key), and writes the
whole table atomically (temporary file + rename), so a reader never sees a torn row and a killed
writer leaves the previous table. Columns unknown to this version, found in an older file, are kept.
A leaderboard that is a symbolic link is written through, atomically at its target (a shared board
keeps getting the rows); a read-only one is refused, never replaced by a writable copy.

A backbone brought with ``--checkpoint NAME=PATH`` carries NAME in ``backbone_name``; the tables
(:mod:`benchmarks.results.tables`) and pictures show it in place of the method.

A hand-edited row that is not valid (wrong number of fields, a value that is not a finite number,
an empty key field, bytes that are not UTF-8) is named by file and line on stderr and skipped by
readers; a writer moves it, as it was, to ``<csv>.rejected`` instead of copying it on, and keeps
every other row. Text the suite did not compute (checkpoint metadata, names) is escaped on the way
out: a CSV cell starting with ``= + - @``, tab or CR gets a leading ``'`` (OWASP's rule against
formula injection; numbers such as ``-1.5`` stay as they are), and a markdown cell has its pipes
escaped and its line breaks replaced by spaces.
"""
from __future__ import annotations

import csv
import datetime as dt
import fcntl
import io
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pretrain.cli import InputError
from pretrain.data_home import data_dir
from pretrain.files import atomic_write, file_hash, git_commit

COLUMNS = [
    "backbone_id", "backbone_name", "method", "regularizer", "arch", "pretrain_data",
    "pretrain_epochs", "pretrain_seed", "params", "gflops", "input_size", "task", "protocol",
    "recipe", "budget", "deviations", "metric", "value", "seed", "date", "commit", "source", "note",
    "predictions",
]
KEY = ("backbone_id", "pretrain_data", "pretrain_epochs", "pretrain_seed", "task", "protocol",
       "recipe", "budget", "deviations", "metric", "seed", "source")
# the key of files written before rows carried their recipe and budget: what a file must have
LEGACY_KEY = ("backbone_id", "task", "protocol", "metric", "seed", "source")
LEGACY_DEFAULTS = {"budget": "unrecorded"}
REQUIRED = ("backbone_id", "task", "protocol", "metric", "value")
DEFAULT_PATH = Path("runs/leaderboard.csv")

BUDGET_ENV = "BENCHMARK_BUDGET"   # set by the suite for its stages: cpu, smoke or full
SUITE_BUDGETS = ("cpu", "smoke")  # the names a deviating run may carry; any other is "custom"


def run_identity(recipe: str, deviations: dict[str, Any], published: bool = True
                 ) -> dict[str, str]:
    """The ``recipe``, ``budget`` and ``deviations`` columns of one run.

    ``deviations``: setting -> value for every setting that differs from the recipe (``None`` or
    ``""`` for one that does not); ``published``: whether the recipe is one whose numbers a paper
    or model zoo reports (a CPU config is not). The budget is ``full`` only for a published recipe
    with no deviation; else the suite's budget named by ``$BENCHMARK_BUDGET`` (cpu, smoke) or
    ``custom``.
    """
    found = {k: v for k, v in deviations.items() if v not in (None, "")}
    if published and not found:
        budget = "full"
    else:
        declared = os.environ.get(BUDGET_ENV, "")
        budget = declared if declared in SUITE_BUDGETS else "custom"
    text = ";".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sorted(found.items()))
    return {"recipe": recipe, "budget": budget, "deviations": text}


def embedded_data(root: str | os.PathLike) -> bool:
    """Whether ``root`` is (inside) the embedded synthetic data (``pretrain/synthetic``), which
    stands in for a real data set and so deviates from every published recipe."""
    base, path = data_dir().resolve(), Path(root).resolve()
    inside = path.relative_to(base).parts if path.is_relative_to(base) else ()
    return bool(inside) and inside[0].startswith("synthetic-")


def backbone_fields(weights: str | os.PathLike | None, meta: dict[str, Any],
                    name: str | None = None) -> dict[str, Any]:
    """The backbone columns of a row, from a checkpoint path (hashed) and its metadata.

    ``weights=None`` is a backbone with no file (the random-init control): its id is taken from
    ``meta["backbone_id"]`` or built from the method and arch. ``name``: the user's name of a
    backbone brought with ``--checkpoint NAME=PATH`` (the stages' ``--backbone-name``), shown in
    every table and picture in place of its method; a label of the id, not part of the row's key
    (the same file measured again under another name replaces its rows).
    """
    if weights is None:
        backbone_id = meta.get("backbone_id") or f"{meta.get('method', 'none')}-{meta.get('arch')}"
    else:
        backbone_id = file_hash(weights)
    return {
        "backbone_id": backbone_id,
        "backbone_name": name or "",
        "method": meta.get("method", "unknown"),
        "regularizer": meta.get("regularizer") or "none",
        "arch": meta.get("arch", ""),
        "pretrain_data": meta.get("data", ""),
        "pretrain_epochs": meta.get("epochs", ""),
        "pretrain_seed": meta.get("seed", ""),
        "params": meta.get("params", ""),
        "gflops": meta.get("gflops", ""),
    }


class LeaderboardError(InputError):
    """A file that is not a leaderboard CSV, or an output the leaderboard will not overwrite."""


def read_rows(csv_path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows) of a leaderboard CSV; an absent file is an empty table. Invalid rows are
    named on stderr (file and line) and skipped."""
    path = Path(csv_path)
    columns, rows, bad = _read(path)
    for line, _, why in bad:
        _warn(f"{path} line {line}: {why}; row skipped")
    return columns, rows


def _read(path: Path) -> tuple[list[str], list[dict[str, str]], list[tuple[int, str, str]]]:
    """(columns, valid rows, invalid rows as (first line, raw text, what is wrong))."""
    if not path.exists():
        return list(COLUMNS), [], []
    # surrogateescape: bytes that are not UTF-8 survive decoding, are found per row, and are
    # written back unchanged to the rejected-rows file
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    lines = text.splitlines(keepends=True)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        found = next(reader, [])
    except csv.Error as err:
        raise LeaderboardError(f"{path}: not a leaderboard CSV ({err})") from err
    missing = [c for c in LEGACY_KEY if c not in found]
    if found and (missing or _undecodable(found)):
        raise LeaderboardError(f"{path}: not a leaderboard CSV (its first line lacks the columns "
                               f"{missing or 'in UTF-8'}); pass the leaderboard with --csv or "
                               "--leaderboard")
    rows, bad, first = [], [], reader.line_num + 1
    while True:
        try:
            record = next(reader, None)
        except csv.Error as err:  # e.g. an unterminated quote: the rest of the file is one cell
            bad.append((first, "".join(lines[first - 1:]), f"not CSV ({err})"))
            break
        if record is None:
            break
        raw, where = "".join(lines[first - 1:reader.line_num]), first
        first = reader.line_num + 1
        if not record:
            continue  # a blank line
        why = _row_problem(found, record)
        if why:
            bad.append((where, raw, why))
        else:
            rows.append({**{c: LEGACY_DEFAULTS.get(c, "") for c in KEY if c not in found},
                         **dict(zip(found, record))})
    return list(COLUMNS) + [c for c in found if c not in COLUMNS], rows, bad


def _row_problem(header: list[str], record: list[str]) -> str | None:
    """What is wrong with one row, or None."""
    if len(record) != len(header):
        return f"{len(record)} fields where the header has {len(header)}"
    if _undecodable(record):
        return "bytes that are not UTF-8"
    row = dict(zip(header, record))
    empty = [c for c in REQUIRED if not row.get(c)]
    if empty:
        return f"empty {', '.join(empty)}"
    try:
        value = float(row["value"])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        return f"value {row['value']!r} is not a finite number"
    return None


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _undecodable(cells: list[str]) -> bool:
    return any("\udc80" <= ch <= "\udcff" for cell in cells for ch in cell)


def _warn(message: str) -> None:
    print(f"leaderboard: warning: {message}", file=sys.stderr)


def write_rows(csv_path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    """Add ``rows`` to the leaderboard, replacing earlier rows with the same key. A symbolic link
    is written through, atomically at its target (a shared board keeps getting the rows); a
    read-only board is refused, never replaced by a writable one."""
    path = Path(os.path.realpath(csv_path))
    if path.exists() and not (path.stat().st_mode & 0o222 and os.access(path, os.W_OK)):
        raise LeaderboardError(f"{path}: the leaderboard is read-only; no row of this run was "
                               "written and the file is left as it is: make it writable "
                               "(chmod u+w) or pass another --leaderboard")
    # a row that does not say its recipe and budget is "custom": never beside a published number
    defaults = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
                "commit": git_commit(), "source": "measured", "seed": 0, "budget": "custom"}
    new_rows = []
    for row in rows:
        absent = [c for c in REQUIRED if row.get(c) in (None, "")]
        if absent:
            raise ValueError(f"leaderboard row {row} lacks {absent}")
        if not _finite(row["value"]):  # a NaN or infinite score is a failed measurement
            raise LeaderboardError(
                f"{path}: score {row['metric']} ({row['task']}, {row.get('protocol')}, seed "
                f"{row.get('seed', 0)}) of backbone {row['backbone_id']} is {row['value']}, not a "
                "finite number; no row of this run was written")
        new_rows.append({k: _cell(v) for k, v in {**defaults, **row}.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Writers hold the lock while their temporary file exists, so any found now was left by
        # a writer that was killed mid-write.
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        columns, old_rows, bad = _read(path)
        if bad:
            _set_aside(path, bad)
        columns += [c for r in new_rows for c in r if c not in columns]
        replaced = {_key(r) for r in new_rows}
        kept = [{k: _cell(v) for k, v in r.items()} for r in old_rows if _key(r) not in replaced]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept + new_rows)
        atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))
    return path


def _set_aside(path: Path, bad: list[tuple[int, str, str]]) -> None:
    """Append invalid rows, byte for byte, to ``<csv>.rejected`` and say so."""
    rejected = path.with_name(path.name + ".rejected")
    with open(rejected, "ab") as f:
        for line, raw, why in bad:
            _warn(f"{path} line {line}: {why}; row moved to {rejected}")
            f.write(raw.encode("utf-8", errors="surrogateescape"))
        f.flush()
        os.fsync(f.fileno())


def _key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(c, "")) for c in KEY)


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else csv_text(str(value))


def csv_text(text: str) -> str:
    """``text`` safe in a spreadsheet: a leading formula character gets a ``'`` (OWASP), unless
    the whole cell is a number."""
    if text.startswith(FORMULA_PREFIXES):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def markdown_text(text: Any) -> str:
    """``text`` as one markdown table cell: pipes escaped, line breaks turned into spaces."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def markdown_table(head: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table (a list of lines), every cell escaped with :func:`markdown_text`."""
    def line(cells: list[Any]) -> str:
        return "| " + " | ".join(markdown_text(c) for c in cells) + " |"

    return [line(head), "|" + "---|" * len(head), *map(line, rows)]


# ----------------------------------------------------------------------------- reading the board
REFERENCE_PATH = Path(__file__).with_name("reference.csv")

def reference_rows() -> list[dict[str, str]]:
    """The papers' and model zoos' published numbers that ship with the suite."""
    return read_rows(REFERENCE_PATH)[1]
