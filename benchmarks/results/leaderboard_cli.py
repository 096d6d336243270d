"""The leaderboard's command line: ``python -m benchmarks.leaderboard show|markdown|plot``
(tables by budget beside the published numbers, and the shortcut picture of the report).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.results.leaderboard import (
    DEFAULT_PATH,
    LeaderboardError,
    budget_sections,
    read_rows,
)
from benchmarks.results.report import shortcut_figure
from pretrain.files import atomic_write

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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.leaderboard",
                                     description="Show the leaderboard beside published numbers.")
    parser.add_argument("command", choices=["show", "markdown", "plot"],
                        help="show: print the tables by budget; markdown: write them to --out "
                             "(or print); plot: write the shortcut picture (one panel per task) "
                             "to --out")
    parser.add_argument("--csv", default=str(DEFAULT_PATH), help="leaderboard CSV to read")
    parser.add_argument("--out", help="output file (markdown: .md, plot: .png); an existing file "
                                      "is overwritten only if this command wrote it")
    parser.add_argument("--all-references", action="store_true",
                        help="show every published row, not only those beside measured rows of "
                             "the full budget and the same task, protocol and recipe")
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
        rows = read_rows(args.csv)[1] if Path(args.csv).exists() else []
        if args.command == "plot":
            print(shortcut_figure(rows, out, mark=PLOT_MARK))
        elif out is not None:
            text = f"{MARKDOWN_MARK}\n{budget_sections(rows, args.all_references)}"
            atomic_write(out, lambda f: f.write(text.encode()))
            print(out)
        else:
            print(budget_sections(rows, args.all_references))
    except (LeaderboardError, OSError, ValueError) as err:
        # ValueError: nothing measured to plot; OSError: a full disk or unwritable folder
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
