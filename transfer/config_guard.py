"""Bounds on a detectron2 YAML config and its ``_BASE_`` chain, checked before anything expands it.

Every file of the chain is read within the bounds of :mod:`pretrain.bounded_yaml` (size, aliases,
alias expansion: a "billion laughs" file would make detectron2's ``CfgNode`` copy out billions of
values), and the chain itself may neither loop (a file that is its own ancestor would recurse
until Python gives up) nor run deeper than :data:`MAX_BASE_DEPTH` files. Each is refused on one
line naming the file.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pretrain.bounded_yaml import YamlBoundError, load_bounded_yaml
from pretrain.data import DataError

MAX_BASE_DEPTH = 10


def check_config_chain(path: Path, resolve_base: Callable[[Any, Path], Path],
                       chain: Sequence[Path] = ()) -> None:
    """Check ``path`` and every file of its ``_BASE_`` chain, raising :class:`YamlBoundError`.
    ``resolve_base(base, config)`` gives the file a ``_BASE_`` value names
    (``transfer.compat.detectron2_base``). Any other fault (a missing or unreadable file, a YAML
    error, a refused base) ends the walk: the config's reader reports it, as it always has."""
    path = Path(path)
    if path.resolve() in [Path(p).resolve() for p in chain]:
        loop = " -> ".join(str(p) for p in [*chain, path])
        raise YamlBoundError(f"{chain[0]}: its _BASE_ chain loops ({loop}); remove the _BASE_ "
                             "that leads back to a file already in the chain")
    if len(chain) >= MAX_BASE_DEPTH:
        raise YamlBoundError(f"{chain[0]}: _BASE_ chain deeper than {MAX_BASE_DEPTH} files "
                             f"(reached {path}); flatten the config")
    try:
        doc = load_bounded_yaml(path)
    except (DataError, OSError, UnicodeDecodeError, yaml.YAMLError):
        return
    bases = doc.get("_BASE_") if isinstance(doc, dict) else None
    for base in bases if isinstance(bases, list) else [] if bases is None else [bases]:
        try:
            base_path = resolve_base(base, path)
        except ValueError:
            return
        check_config_chain(base_path, resolve_base, (*chain, path))
