"""The leaderboard's command line: ``python -m benchmarks.leaderboard show|markdown|plot``
(tables by budget beside the published numbers, and the shortcut picture of the report).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.results.leaderboard import DEFAULT_PATH, LeaderboardError, read_rows
from benchmarks.results.pictures import shortcut_figure
from benchmarks.results.tables import budget_sections
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


# The main job's leaderboard (``python -m benchmarks.suite`` writes into its run folder), read by
# default before the one standalone benchmark runs append to.
SUITE_PATH = Path("runs/suite/leaderboard.csv")


def default_csv() -> Path:
    """The CSV a subcommand reads without ``--csv``: the main job's if it exists, else the
    standalone runs' one."""
    return SUITE_PATH if SUITE_PATH.exists() else DEFAULT_PATH


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssl-leaderboard", description="The leaderboard beside the published numbers "
        "(also python -m benchmarks.leaderboard). Each subcommand has its own --help.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {"show": "print the tables by budget, with the shortcut gaps",
             "markdown": "write the tables by budget to --out (a .md file), or print them",
             "plot": "write the shortcut picture (one panel per task) to --out (a .png file; "
                     "default: the CSV's name with .png)"}
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--csv", type=Path, help=f"leaderboard CSV to read (default {SUITE_PATH}, "
                         f"the main job's, if it exists, else {DEFAULT_PATH}, the standalone "
                         "runs')")
        if name != "show":
            sub.add_argument("--out", type=Path, help="output file; an existing file is "
                             "overwritten only if this command wrote it")
        if name != "plot":
            sub.add_argument("--all-references", action="store_true",
                             help="show every published row, not only those beside measured "
                                  "rows of the full budget and the same task, protocol and "
                                  "recipe")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    csv = args.csv or default_csv()
    every_reference = getattr(args, "all_references", False)
    out = getattr(args, "out", None)
    try:
        if not csv.exists() and not every_reference:
            raise LeaderboardError(f"--csv {csv}: no such file; run the suite or a benchmark "
                                   "first, or pass --csv")
        if args.command == "plot":
            out = out or csv.with_suffix(".png")
        if out is not None:
            check_output(out, args.command)
        rows = read_rows(csv)[1] if csv.exists() else []
        if args.command == "plot":
            print(shortcut_figure(rows, out, mark=PLOT_MARK))
        elif out is not None:
            text = f"{MARKDOWN_MARK}\n{budget_sections(rows, every_reference)}"
            atomic_write(out, lambda f: f.write(text.encode()))
            print(out)
        else:
            print(budget_sections(rows, every_reference))
    except (LeaderboardError, OSError, ValueError) as err:
        # ValueError: nothing measured to plot; OSError: a full disk or unwritable folder
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
