"""The leaderboard: one CSV, one row per (backbone, task, protocol, metric, seed, source).

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

from benchmarks.tasks import gap_of
from pretrain.checkpoint import atomic_write, git_commit
from pretrain.open_backbone import file_sha256

COLUMNS = [
    "backbone_id", "method", "regularizer", "arch", "pretrain_data", "pretrain_epochs",
    "task", "protocol", "metric", "value", "seed", "date", "commit", "source",
]
KEY = ("backbone_id", "task", "protocol", "metric", "seed", "source")
REQUIRED = ("backbone_id", "task", "protocol", "metric", "value")
DEFAULT_PATH = Path("runs/leaderboard.csv")


def file_hash(path: str | os.PathLike, length: int = 12) -> str:
    """Short sha256 of a file's bytes: the backbone id of a checkpoint."""
    return file_sha256(path)[:length]


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
    missing = [c for c in KEY if c not in found]
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
            rows.append(dict(zip(found, record)))
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
    defaults = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
                "commit": git_commit(), "source": "measured", "seed": 0}
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


def summarize(rows: list[dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Per task, one entry per (backbone, protocol, source): metric -> (mean, std, n) over seeds,
    plus the task's shortcut gap when its metrics are present."""
    groups: dict[tuple[str, ...], dict[str, list[float]]] = {}
    info: dict[tuple[str, ...], dict[str, str]] = {}
    for row in rows:
        key = (row["task"], row["backbone_id"], row["protocol"], row["source"])
        groups.setdefault(key, {}).setdefault(row["metric"], []).append(float(row["value"]))
        info[key] = row
    tasks: dict[str, list[dict[str, Any]]] = {}
    for key, metrics in groups.items():
        row = info[key]
        stats = {m: _mean_std(v) for m, v in metrics.items()}
        entry = {"backbone": _label(row), "backbone_id": row["backbone_id"],
                 "protocol": row["protocol"], "source": row["source"], "metrics": stats}
        gap = gap_of(row["task"])  # the task's shortcut gap (benchmarks/tasks.py)
        value = gap.of({m: s[0] for m, s in stats.items()}) if gap else None
        if value is not None:
            entry["gap"] = (gap.name, value)
        tasks.setdefault(row["task"], []).append(entry)
    for entries in tasks.values():
        entries.sort(key=lambda e: (e["source"] != "measured", e["protocol"], e["backbone"]))
    return tasks


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return mean, var ** 0.5, len(values)


def _label(row: dict[str, str]) -> str:
    regularizer = row.get("regularizer") or "none"
    name = row.get("method") or "?"
    name += f"+{regularizer}" if regularizer != "none" else ""
    return f"{name} [{row['backbone_id']}]" if row.get("source") == "measured" else name


def claims(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Each published regularizer-versus-base comparison that the measured rows can test: a
    method with a regularizer against the same method without, on one task, protocol and metric.
    ``holds`` says whether the measured difference has the published sign."""
    def means(selected: Iterable[dict[str, str]], by_source: bool) -> dict[tuple, float]:
        values: dict[tuple, list[float]] = {}
        for r in selected:
            key = (r["method"], r.get("regularizer") or "none", r["task"], r["protocol"],
                   r["metric"], r["source"] if by_source else "measured")
            values.setdefault(key, []).append(float(r["value"]))
        return {k: sum(v) / len(v) for k, v in values.items()}

    published = means(reference_rows(), by_source=True)
    measured = means((r for r in rows if r["source"] == "measured"), by_source=False)
    found = []
    for (method, regularizer, *where, source), value in sorted(published.items()):
        base = published.get((method, "none", *where, source))
        ours = measured.get((method, regularizer, *where, "measured"))
        ours_base = measured.get((method, "none", *where, "measured"))
        if regularizer == "none" or None in (base, ours, ours_base):
            continue
        found.append({"claim": f"{method}+{regularizer} vs {method}", "task": where[0],
                      "protocol": where[1], "metric": where[2], "source": source,
                      "published": (value, base), "measured": (ours, ours_base),
                      "holds": (ours - ours_base) * (value - base) > 0})
    return found


def with_references(rows: list[dict[str, str]], everything: bool = False) -> list[dict[str, str]]:
    """Measured rows plus the reference rows of the (task, protocol) pairs they cover."""
    shown = {(r["task"], r["protocol"]) for r in rows}
    refs = [r for r in reference_rows() if everything or (r["task"], r["protocol"]) in shown]
    return rows + refs


def markdown(rows: list[dict[str, str]]) -> str:
    """The table grouped by task, one column per metric, and the shortcut gap."""
    out = []
    for task, entries in sorted(summarize(rows).items()):
        metrics = sorted({m for e in entries for m in e["metrics"]})
        has_gap = any("gap" in e for e in entries)
        gap_column = [gap_of(task).name] if has_gap else []
        head = ["backbone", "protocol", *map(markdown_text, metrics), *gap_column, "source"]
        out += [f"### {markdown_text(task)}", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)]
        for e in entries:
            cells = [markdown_text(e["backbone"]), markdown_text(e["protocol"])]
            cells += [_fmt(e["metrics"].get(m)) for m in metrics]
            cells += [f"{e['gap'][1]:+.1f}" if "gap" in e else ""] if has_gap else []
            out.append("| " + " | ".join(cells + [markdown_text(e["source"])]) + " |")
        out.append("")
    return "\n".join(out)


def _fmt(stat: tuple[float, float, int] | None) -> str:
    if stat is None:
        return ""
    mean, std, n = stat
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def plot(rows: list[dict[str, str]], png: str | os.PathLike) -> Path:
    """A bar chart per (task, protocol) of the measured panel; reference values as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(task, protocol) for task, entries in sorted(summarize(rows).items())
              for protocol in sorted({e["protocol"] for e in entries if e["source"] == "measured"})]
    if not panels:
        raise ValueError("no measured rows to plot")
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels)), squeeze=False)
    tasks = summarize(rows)
    for ax, (task, protocol) in zip(axes[:, 0], panels):
        entries = [e for e in tasks[task] if e["protocol"] == protocol]
        measured = [e for e in entries if e["source"] == "measured"]
        metrics = sorted({m for e in measured for m in e["metrics"]})
        width = 0.8 / max(len(measured), 1)
        for i, e in enumerate(measured):
            xs = [j + i * width for j in range(len(metrics))]
            ax.bar(xs, [e["metrics"].get(m, (0, 0, 0))[0] for m in metrics], width,
                   yerr=[e["metrics"].get(m, (0, 0, 0))[1] for m in metrics], label=e["backbone"])
        for e in entries:
            if e["source"] != "measured":
                for j, m in enumerate(metrics):
                    if m in e["metrics"]:
                        ax.plot(j + 0.4 - width / 2, e["metrics"][m][0], "k_", markersize=14)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics, fontsize=8)
        ax.set_title(f"{task} / {protocol}  (black ticks: published)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, metadata={"Software": PLOT_MARK})
    plt.close(fig)
    return png


# How the command recognizes its own earlier output, the only existing file it overwrites: a
# first line (markdown) or a PNG text chunk (plot, written by matplotlib before the image data).
MARKDOWN_MARK = "<!-- written by python -m benchmarks.leaderboard markdown -->"
PLOT_MARK = "python -m benchmarks.leaderboard plot"
OUTPUT_SUFFIXES = {"markdown": ".md", "plot": ".png"}


def check_output(path: Path, command: str) -> None:
    """Refuse an ``--out`` of the wrong kind, or an existing file this command did not write."""
    suffix = OUTPUT_SUFFIXES[command]
    if path.suffix.lower() != suffix:
        raise LeaderboardError(f"--out {path}: {command} writes a {suffix} file; give a path "
                               f"ending in {suffix}")
    if not path.exists():
        return
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4096)
        mark = (MARKDOWN_MARK.encode() if command == "markdown"
                else b"tEXtSoftware\x00" + PLOT_MARK.encode())
        if (head.startswith(mark) if command == "markdown" else mark in head):
            return
    raise LeaderboardError(f"--out {path}: exists and was not written by 'leaderboard "
                           f"{command}'; it is left as it is: remove it or choose another --out")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.leaderboard",
                                     description="Show the leaderboard beside published numbers.")
    parser.add_argument("command", choices=["show", "markdown", "plot"],
                        help="show: print the table; markdown: write it to --out (or print); "
                             "plot: write a PNG chart of the measured panel to --out")
    parser.add_argument("--csv", default=str(DEFAULT_PATH), help="leaderboard CSV to read")
    parser.add_argument("--out", help="output file (markdown: .md, plot: .png); an existing file "
                                      "is overwritten only if this command wrote it")
    parser.add_argument("--all-references", action="store_true",
                        help="show every published row, not only those of measured protocols")
    args = parser.parse_args(argv)
    try:
        if not Path(args.csv).exists() and not args.all_references:
            raise LeaderboardError(f"--csv {args.csv}: no such file; run a benchmark first or "
                                   "pass --csv")
        out = None
        if args.command == "plot":
            out = Path(args.out) if args.out else Path(args.csv).with_suffix(".png")
        elif args.command == "markdown" and args.out:
            out = Path(args.out)
        if out is not None:
            check_output(out, args.command)
        rows = with_references(read_rows(args.csv)[1], everything=args.all_references)
        if args.command == "plot":
            print(plot(rows, out))
        elif out is not None:
            text = f"{MARKDOWN_MARK}\n{markdown(rows)}"
            atomic_write(out, lambda f: f.write(text.encode()))
            print(out)
        else:
            print(markdown(rows))
    except (LeaderboardError, OSError, ValueError) as err:
        # ValueError: nothing measured to plot; OSError: a full disk or unwritable folder
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
