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

from benchmarks.results.gaps import gap_of
from benchmarks.results.predictions import prediction_key
from pretrain.files import atomic_write, file_hash, git_commit

COLUMNS = [
    "backbone_id", "method", "regularizer", "arch", "pretrain_data", "pretrain_epochs",
    "pretrain_seed", "params", "gflops", "input_size", "task", "protocol", "recipe", "budget",
    "deviations", "metric", "value", "seed", "date", "commit", "source", "note", "predictions",
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
    from pretrain.synthetic import data_dir

    base, path = data_dir().resolve(), Path(root).resolve()
    inside = path.relative_to(base).parts if path.is_relative_to(base) else ()
    return bool(inside) and inside[0].startswith("synthetic-")


def backbone_fields(weights: str | os.PathLike | None, meta: dict[str, Any]) -> dict[str, Any]:
    """The backbone columns of a row, from a checkpoint path (hashed) and its metadata.

    ``weights=None`` is a backbone with no file (the random-init control): its id is taken from
    ``meta["backbone_id"]`` or built from the method and arch.
    """
    if weights is None:
        backbone_id = meta.get("backbone_id") or f"{meta.get('method', 'none')}-{meta.get('arch')}"
    else:
        backbone_id = file_hash(weights)
    return {
        "backbone_id": backbone_id,
        "method": meta.get("method", "unknown"),
        "regularizer": meta.get("regularizer") or "none",
        "arch": meta.get("arch", ""),
        "pretrain_data": meta.get("data", ""),
        "pretrain_epochs": meta.get("epochs", ""),
        "pretrain_seed": meta.get("seed", ""),
        "params": meta.get("params", ""),
        "gflops": meta.get("gflops", ""),
    }


class LeaderboardError(ValueError):
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
    """Add ``rows`` to the leaderboard, replacing earlier rows with the same key."""
    path = Path(csv_path)
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


# ----------------------------------------------------------------------------- reading the board
REFERENCE_PATH = Path(__file__).with_name("reference.csv")

def reference_rows() -> list[dict[str, str]]:
    """The papers' and model zoos' published numbers that ship with the suite."""
    return read_rows(REFERENCE_PATH)[1]


def name_of(row: dict[str, str]) -> str:
    """``method`` or ``method+regularizer``: the panel's name of a row's backbone recipe."""
    regularizer = row.get("regularizer") or "none"
    return (row.get("method") or "?") + (f"+{regularizer}" if regularizer != "none" else "")


# A row's group in the tables: the backbone recipe (backbones that differ only in their recorded
# pretraining seed are one group, so a several-seed run shows one mean; a backbone without a
# recorded seed is its own group), the task, protocol, recipe, budget and deviations.
GROUP = ("task", "method", "regularizer", "arch", "pretrain_data", "pretrain_epochs", "protocol",
         "recipe", "budget", "deviations", "source")


def group_key(row: dict[str, str]) -> tuple[str, ...]:
    unseeded = "" if str(row.get("pretrain_seed", "")) else row["backbone_id"]
    return (unseeded, *(str(row.get(c, "") or ("none" if c == "regularizer" else ""))
                        for c in GROUP))


def load_correct(row: dict[str, str]) -> tuple[str, Any] | None:
    """(test set hash, per-example correctness) of a measured row from the ``predictions.npz``
    its probe saved (benchmarks/probes/probe.py), or None when there is none."""
    import numpy as np

    path = row.get("predictions") or ""
    if not path or not Path(path).is_file():
        return None
    key = prediction_key(row["protocol"], row["metric"], row["seed"])
    with np.load(path) as saved:
        if key not in saved or f"labels.{row['metric']}" not in saved:
            return None
        return str(saved["test_set"]), saved[key] == saved[f"labels.{row['metric']}"]


def value_interval(rows: list[dict[str, str]]) -> tuple[float, float | None, float | None, str]:
    """(mean, low, high, kind) of one metric's rows: a t-interval over seeds when there are
    several, else the bootstrap interval over the test examples of the one row's predictions,
    else no interval."""
    from benchmarks.results.stats import bootstrap_mean, t_interval

    values = [float(r["value"]) for r in rows]
    if len(values) > 1:
        return (*t_interval(values), f"t, n={len(values)}")
    found = load_correct(rows[0])
    if found is None:
        return values[0], None, None, ""
    _, low, high = bootstrap_mean(found[1])
    return values[0], low, high, "bootstrap"


def summarize(rows: list[dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Per task, one entry per group (:data:`GROUP`): metric -> (mean, low, high, kind) over seeds
    (:func:`value_interval`), plus the task's shortcut gap when its metrics are present."""
    groups: dict[tuple[str, ...], dict[str, list[dict[str, str]]]] = {}
    for row in rows:
        groups.setdefault(group_key(row), {}).setdefault(row["metric"], []).append(row)
    tasks: dict[str, list[dict[str, Any]]] = {}
    for metrics in groups.values():
        row = next(iter(metrics.values()))[0]
        ids = sorted({r["backbone_id"] for rs in metrics.values() for r in rs})
        stats = {m: value_interval(rs) for m, rs in metrics.items()}
        entry = {"backbone": _label(row, ids), "name": name_of(row), "backbone_ids": ids,
                 "protocol": row["protocol"], "recipe": row.get("recipe", ""),
                 "budget": row.get("budget", ""), "deviations": row.get("deviations", ""),
                 "source": row["source"], "note": row.get("note", ""), "metrics": stats}
        gap = gap_of(row["task"])  # the task's shortcut gap (benchmarks/results/gaps.py)
        value = gap.of({m: s[0] for m, s in stats.items()}) if gap else None
        if value is not None:
            entry["gap"] = (gap.name, value)
        tasks.setdefault(row["task"], []).append(entry)
    for entries in tasks.values():
        entries.sort(key=lambda e: (e["source"] != "measured", e["protocol"], e["backbone"]))
    return tasks


def _label(row: dict[str, str], ids: list[str]) -> str:
    if row.get("source") != "measured":
        return name_of(row)
    return f"{name_of(row)} [{', '.join(ids)}]"


def markdown(rows: list[dict[str, str]]) -> str:
    """The tables of ``rows``, one per task, one column per metric (mean and 95% interval where
    one can be had), and the shortcut gap. The protocol cell names the recipe and deviations."""
    out = []
    for task, entries in sorted(summarize(rows).items()):
        metrics = sorted({m for e in entries for m in e["metrics"]})
        has_gap = any("gap" in e for e in entries)
        gap_column = [gap_of(task).name] if has_gap else []
        head = ["backbone", "protocol", *map(markdown_text, metrics), *gap_column, "source"]
        out += [f"### {markdown_text(task)}", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)]
        for e in entries:
            protocol = " · ".join(x for x in (e["protocol"], e["recipe"], e["deviations"]) if x)
            cells = [markdown_text(e["backbone"]), markdown_text(protocol)]
            cells += [_fmt(e["metrics"].get(m)) for m in metrics]
            cells += [f"{e['gap'][1]:+.1f}" if "gap" in e else ""] if has_gap else []
            source = e["source"] + (f" ({e['note']})" if e["note"] else "")
            out.append("| " + " | ".join(cells + [markdown_text(source)]) + " |")
        out.append("")
    return "\n".join(out)


def _fmt(stat: tuple[float, float | None, float | None, str] | None) -> str:
    if stat is None:
        return ""
    mean, low, high, _ = stat
    return f"{mean:.1f}" if low is None else f"{mean:.1f} [{low:.1f}, {high:.1f}]"


BUDGET_ORDER = ("full", "cpu", "smoke", "custom", "unrecorded")
NOT_PUBLISHED = ("Published numbers do not apply to these rows: their recipe did not run "
                 "unchanged (see each row's deviations), so they show that the path works, not how "
                 "the backbones rank under a paper's protocol.")


def references_for(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The published rows of the same task, protocol and recipe as measured ``full`` rows."""
    shown = {(r["task"], r["protocol"], r.get("recipe", "")) for r in rows
             if r["source"] == "measured" and r.get("budget") == "full"}
    return [r for r in reference_rows() if (r["task"], r["protocol"], r["recipe"]) in shown]


def budget_sections(rows: list[dict[str, str]], all_references: bool = False) -> str:
    """The measured rows by budget: ``full`` beside the published numbers of the same task,
    protocol and recipe; every other budget in its own section, saying published numbers do not
    apply; with ``all_references`` every published number in a last section."""
    measured = [r for r in rows if r["source"] == "measured"]
    budgets = sorted({r.get("budget", "") for r in measured},
                     key=lambda b: (BUDGET_ORDER.index(b) if b in BUDGET_ORDER else 99, b))
    out = []
    for budget in budgets:
        chunk = [r for r in measured if r.get("budget", "") == budget]
        if budget == "full":
            out += ["## Budget `full`: measured beside published numbers of the same task, "
                    "protocol and recipe", "", markdown(chunk + references_for(chunk))]
        else:
            out += [f"## Budget `{markdown_text(budget)}`: published numbers do not apply", "",
                    NOT_PUBLISHED, "", markdown(chunk)]
    if all_references:
        out += ["## Published numbers", "", markdown(reference_rows())]
    return "\n".join(out)
