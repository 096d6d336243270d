"""Bounds on a detectron2 YAML config, checked before anything expands it.

A config is untrusted input, and ``yaml.safe_load`` alone does not make it harmless: YAML aliases
share nodes, so a few hundred bytes of nested aliases (a "billion laughs" file) load instantly as a
shared graph that detectron2's ``CfgNode`` then copies out into billions of nodes (a hang, then
memory exhaustion). A ``_BASE_`` chain that loops recurses until Python gives up. Every config
file is read here first, refused on one line naming it when it exceeds a bound:

- its size (:data:`MAX_CONFIG_BYTES`; the model zoo's largest file is a few KB),
- its aliases (:data:`MAX_ALIASES`; detectron2's own configs use none),
- the nodes it holds once every alias is expanded (:data:`MAX_EXPANDED_NODES`), and any alias
  that refers to a node containing itself,
- its ``_BASE_`` chain: a file that is its own ancestor, or a chain deeper than
  :data:`MAX_BASE_DEPTH`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pretrain.cli import InputError

MAX_CONFIG_BYTES = 256 * 1024
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 100_000
MAX_BASE_DEPTH = 10


class ConfigBoundError(InputError):
    """A config file beyond the bounds above; the message names it and the bound."""


def check_config_chain(path: Path, resolve_base: Callable[[Any, Path], Path],
                       chain: Sequence[Path] = ()) -> None:
    """Check ``path`` and every file of its ``_BASE_`` chain against the bounds above, raising
    :class:`ConfigBoundError`. ``resolve_base(base, config)`` gives the file a ``_BASE_`` value
    names (``transfer.compat.detectron2_base``). Any other fault (a missing or unreadable file, a
    YAML error, a refused base) ends the walk: the config's reader reports it, as it always has."""
    path = Path(path)
    if path.resolve() in [Path(p).resolve() for p in chain]:
        loop = " -> ".join(str(p) for p in [*chain, path])
        raise ConfigBoundError(f"{chain[0]}: its _BASE_ chain loops ({loop}); remove the _BASE_ "
                               "that leads back to a file already in the chain")
    if len(chain) >= MAX_BASE_DEPTH:
        raise ConfigBoundError(f"{chain[0]}: _BASE_ chain deeper than {MAX_BASE_DEPTH} files "
                               f"(reached {path}); flatten the config")
    doc = _bounded_document(path)
    bases = doc.get("_BASE_") if isinstance(doc, dict) else None
    for base in bases if isinstance(bases, list) else [] if bases is None else [bases]:
        try:
            base_path = resolve_base(base, path)
        except ValueError:
            return
        check_config_chain(base_path, resolve_base, (*chain, path))


def _bounded_document(path: Path) -> Any:
    """The YAML document in ``path`` (``yaml.SafeLoader``) once its size and alias expansion are
    checked; None when it cannot be read as plain YAML."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigBoundError(f"{path}: config file larger than {MAX_CONFIG_BYTES // 1024} KB; "
                               "not a detectron2 config (the model zoo's are a few KB)")
    try:
        loader = yaml.SafeLoader(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(path, node)
        return loader.construct_document(node)
    except yaml.YAMLError:
        return None
    except RecursionError as err:
        raise ConfigBoundError(f"{path}: YAML nested too deeply to be a config") from err
    finally:
        loader.dispose()


def _check_expansion(path: Path, root: yaml.Node) -> None:
    """Count aliases (a node reached again) and the nodes an alias-expanding reader builds."""
    expanded: dict[int, int] = {}  # node id -> nodes in its expansion
    open_nodes: set[int] = set()
    aliases = 0

    def size(node: yaml.Node) -> int:
        nonlocal aliases
        key = id(node)
        if key in open_nodes:
            raise ConfigBoundError(f"{path}: a YAML alias refers to a node that contains it (a "
                                   "recursive structure); not a config")
        if key in expanded:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ConfigBoundError(f"{path}: more than {MAX_ALIASES} YAML aliases; not a "
                                       "detectron2 config (a YAML bomb?)")
            return expanded[key]
        open_nodes.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        total = 1 + sum(size(child) for child in children)
        open_nodes.discard(key)
        if total > MAX_EXPANDED_NODES:
            raise ConfigBoundError(f"{path}: its YAML aliases expand to over "
                                   f"{MAX_EXPANDED_NODES} values (a YAML bomb); not a config")
        expanded[key] = total
        return total

    size(root)

