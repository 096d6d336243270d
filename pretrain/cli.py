"""What every command line of the suite shares at its edge: bad input ends in one line, exit 2.

Every error class for bad input (:class:`pretrain.config.ConfigError`,
:class:`pretrain.data.DataError`, :class:`pretrain.checkpoint.CheckpointError` and the stages' own)
derives from :class:`InputError`. :func:`run_main` turns one, or an ``OSError`` (a file that
cannot be written, a full disk: its message names the file), into ``error: <message>`` on
stderr, on one line, without a traceback, and exit status 2, as argparse does for a bad flag. A
disk that fills up is a fault of the machine, not of the input, but like a bad input it needs the
user to act before a rerun, and scripts already treat 2 as "fix something and rerun": so it is 2
too, with the file and ``No space left on device`` in the line.

The rest is the edge's checks shared by the probes, the drivers and the suite: numeric flags
checked while parsing (:func:`number`), argparse errors on one line (:func:`one_line_errors`),
the one place a command claims its output folder (:func:`claim_output`), and results that stay
on disk when recording them fails (:func:`keeping`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from pretrain.files import atomic_write

INPUT_ERROR_STATUS = 2


class InputError(ValueError):
    """Bad input (a flag, a file, a data set): the message names it, says what is wrong and how
    to fix it."""


def one_line(err: BaseException | str) -> str:
    """An error's message on one line. An error re-raised from a DataLoader worker carries the
    worker's whole traceback in its message: only its last line, the original message, is kept."""
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback (most recent call last)" in text:
        last = lines[-1]  # "module.ClassName: message"
        head, sep, message = last.partition(": ")
        return message if sep and " " not in head else last
    return " ".join(lines)


def run_main(run: Callable[[], Any], prog: str | None = None,
             statuses: Mapping[type[BaseException], int] | None = None) -> int:
    """Call ``run()``; return 0, or print the error of bad input on one line and return its exit
    status (2; ``statuses`` adds other error classes with their own status)."""
    caught = {InputError: INPUT_ERROR_STATUS, OSError: INPUT_ERROR_STATUS, **(statuses or {})}
    try:
        run()
    except tuple(caught) as err:
        print(f"{prog + ': ' if prog else ''}error: {one_line(err)}", file=sys.stderr)
        return next(status for kind, status in reversed(caught.items())
                    if isinstance(err, kind))
    return 0


# ----------------------------------------------------------------------------- flags
def number(kind: type = int, low: float = 1, above: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` (int or float) at least ``low`` (greater than it
    with ``above``); anything else is refused while parsing, naming the flag."""
    word = "a whole number" if kind is int else "a number"
    bound = f"{'greater than' if above else 'at least'} {low:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {word} {bound}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be {word} {bound}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report a bad flag as one line (``prog: error: ...``), exit 2, without the
    usage block argparse prints first (``--help`` still shows it)."""
    def error(message: str) -> NoReturn:
        parser.exit(INPUT_ERROR_STATUS, f"{parser.prog}: error: {one_line(message)} "
                                        "(see --help)\n")

    parser.error = error  # type: ignore[method-assign]
    return parser


def without_gpus(argv: list[str]) -> list[str]:
    """``argv`` without its ``--gpus N`` / ``--gpus=N`` (what a command passes on to the
    processes it starts under torchrun)."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--gpus="):
            skip = False
            continue
        skip = arg == "--gpus"
        if not skip:
            kept.append(arg)
    return kept


def torchrun_command(module: str, argv: list[str], gpus: int) -> list[str]:
    """``python -m module argv`` (less ``--gpus``) under torchrun: ``gpus`` processes on this
    machine on a free port, so two runs on one machine never collide (``--gpus N`` of every
    command that spans GPUs)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus),
            "--master_addr", "127.0.0.1", "--master_port", str(port),
            "-m", module, *without_gpus(argv)]


# ----------------------------------------------------------------------------- outputs
# Records which command made a folder: a command writes into a folder it made, or one it
# recognizes as its own earlier run, never into one holding another command's outputs.
OUTPUT_MARK = ".written_by.json"
# Files by which a folder is recognized as some command's outputs: a pretraining run (config.yaml,
# last_state.pt, backbone.safetensors, metrics.json with its loss history), a benchmark or driver
# run (config.json, metrics.json, log.txt, last_checkpoint, backbone.json), a suite's folder
# (leaderboard.csv, report.md, panel.png).
KNOWN_OUTPUTS = ("metrics.json", "config.json", "config.yaml", "log.txt", "last_state.pt",
                 "backbone.safetensors", "last_checkpoint", "backbone.json", "leaderboard.csv",
                 "report.md", "panel.png")


class OutputError(InputError):
    """An output folder a command will not write into; the message names it and the fix."""


def claim_output(folder: Path, command: str, own: Callable[[Path], bool] | None = None,
                 flag: str = "--out") -> Path:
    """Make ``folder`` the output folder of ``command`` (e.g. ``benchmarks/fairface.py fixed``),
    or refuse it before anything is written: a folder marked as another command's, or unmarked
    yet holding files of :data:`KNOWN_OUTPUTS` that ``own(folder)`` does not recognize as this
    command's earlier run (a run made before folders were marked). Returns the folder."""
    mark = folder / OUTPUT_MARK
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder}: is a file, not a folder; choose a folder for "
                          "the outputs")
    if mark.exists():
        try:
            owner = json.loads(mark.read_text(encoding="utf-8"))["command"]
        except (OSError, ValueError, KeyError, TypeError):
            owner = f"unknown (unreadable {OUTPUT_MARK})"
        if owner == command:
            return folder
        raise OutputError(f"{flag} {folder}: holds the outputs of '{owner}', not of '{command}'; "
                          f"nothing there is overwritten: choose another {flag}")
    found = [name for name in KNOWN_OUTPUTS if (folder / name).exists()]
    if found and not (own and own(folder)):
        raise OutputError(f"{flag} {folder}: holds {', '.join(found)} of another command (a "
                          "pretraining run, a suite or another benchmark); nothing there is "
                          f"overwritten: give each run its own {flag} (a new or empty folder)")
    text = json.dumps({"command": command}).encode()
    atomic_write(mark, lambda f: f.write(text))
    return folder


@contextmanager
def keeping(results: Path) -> Iterator[None]:
    """Run the block that records results already saved in ``results`` (the leaderboard append):
    its failure (a bad leaderboard, a non-finite score, a full disk) becomes one line that says
    the results are kept there."""
    try:
        yield
    except (InputError, OSError, ValueError) as err:
        raise InputError(f"{one_line(err)}; the results are kept in {results}") from err
