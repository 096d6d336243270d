"""What every command line of the suite shares at its edge: bad input ends in one line, exit 2.

Every error class for bad input (:class:`pretrain.config.ConfigError`,
:class:`pretrain.data.DataError`, :class:`pretrain.checkpoint.CheckpointError` and the stages' own)
derives from :class:`InputError`. :func:`run_main` turns one, or an ``OSError`` (a file that
cannot be written, whose message names it), into ``error: <message>`` on stderr, without a
traceback, and exit status 2, as argparse does for a bad flag.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

INPUT_ERROR_STATUS = 2


class InputError(ValueError):
    """Bad input (a flag, a file, a data set): the message names it, says what is wrong and how
    to fix it."""


def run_main(run: Callable[[], Any], prog: str | None = None,
             statuses: Mapping[type[BaseException], int] | None = None) -> int:
    """Call ``run()``; return 0, or print the error of bad input and return its exit status
    (2; ``statuses`` adds other error classes with their own status)."""
    caught = {InputError: INPUT_ERROR_STATUS, OSError: INPUT_ERROR_STATUS, **(statuses or {})}
    try:
        run()
    except tuple(caught) as err:
        print(f"{prog + ': ' if prog else ''}error: {err}", file=sys.stderr)
        return next(status for kind, status in reversed(caught.items())
                    if isinstance(err, kind))
    return 0
