"""Text shared by the reader's one-line errors and its command-line flags."""
from __future__ import annotations

import argparse


def preview(keys: list[str], n: int = 8) -> str:
    """The first ``n`` of ``keys``, and how many there are in all: for error messages."""
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def one_line(err: BaseException | str) -> str:
    """An error's text with its line breaks and runs of spaces collapsed."""
    return " ".join(str(err).split())


def parse_bool(value: str) -> bool:
    """``true``/``false`` (any case) for a command-line flag."""
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{value!r}: expected true or false")
    return lowered == "true"
