"""YAML from files the suite did not write, read within bounds (configs, run folders' config.yaml).

``yaml.safe_load`` runs no code, but it does not make a file harmless: aliases share nodes, so a
few hundred bytes of nested aliases (a "billion laughs" file) load at once as a shared graph that
the next deep copy (``dataclasses.asdict``, detectron2's ``CfgNode``) expands into billions of
values: a hang, then memory exhaustion. :func:`load_bounded_yaml` refuses, on one line naming the
file, one larger than :data:`MAX_YAML_BYTES`, one with more than :data:`MAX_ALIASES` aliases (the
suite's and detectron2's configs use none), one whose aliases expand to more than
:data:`MAX_EXPANDED_NODES` values, an alias to a node that contains it, and nesting deeper than
Python's recursion limit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pretrain.cli import InputError
from pretrain.data.files import open_regular

MAX_YAML_BYTES = 256 * 1024
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 100_000


class YamlBoundError(InputError):
    """A YAML file beyond the bounds above; the message names it and the bound."""


def load_bounded_yaml(path: Path) -> Any:
    """The document in ``path`` (``yaml.SafeLoader``) once its size and alias expansion are
    checked. One that is missing or not a regular file raises ``DataError``; one that cannot be
    read or is not YAML raises ``OSError``, ``UnicodeDecodeError`` or ``yaml.YAMLError``, as
    ``yaml.safe_load`` would."""
    with open_regular(Path(path), "YAML file") as f:  # a FIFO is refused, not waited on
        data = f.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise YamlBoundError(f"{path}: larger than {MAX_YAML_BYTES // 1024} KB; not a config "
                             "file (the suite's and detectron2's are a few KB)")
    loader = yaml.SafeLoader(data.decode("utf-8"))
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(path, node)
        return loader.construct_document(node)
    except RecursionError as err:
        raise YamlBoundError(f"{path}: YAML nested too deeply to be a config") from err
    finally:
        loader.dispose()


def _check_expansion(path: Path, root: yaml.Node) -> None:
    """Count aliases (a node reached again) and the values an alias-expanding copy builds."""
    expanded: dict[int, int] = {}  # node id -> values in its expansion
    open_nodes: set[int] = set()
    aliases = 0

    def size(node: yaml.Node) -> int:
        nonlocal aliases
        key = id(node)
        if key in open_nodes:
            raise YamlBoundError(f"{path}: a YAML alias refers to a node that contains it (a "
                                 "recursive structure); not a config")
        if key in expanded:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise YamlBoundError(f"{path}: more than {MAX_ALIASES} YAML aliases; not a "
                                     "config (a YAML bomb?)")
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
            raise YamlBoundError(f"{path}: its YAML aliases expand to over "
                                 f"{MAX_EXPANDED_NODES} values (a YAML bomb); not a config")
        expanded[key] = total
        return total

    size(root)
