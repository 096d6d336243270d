"""Imports run one way (../ARCHITECTURE.md's floors) and never in a circle.

Every project module (pretrain, benchmarks, transfer, datasets, tools; transfer/configs are the
engines' configs, not modules) is parsed with ``ast``: imports inside functions count as much as
those at the top, since a lazy import only hides a cycle. A module imports another when it names it
(``import a.b``, ``from a import b`` where ``a.b`` is a module, ``from a.b import name``).
"""
from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("pretrain", "benchmarks", "transfer", "datasets", "tools")
SKIPPED = ("transfer/configs",)
TORCH = ("torch", "torchvision")
ROOMS = ("benchmarks.results", "benchmarks.probes", "benchmarks.runner")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    found = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            if not any(path.relative_to(REPO).as_posix().startswith(s) for s in SKIPPED):
                found[_module_name(path)] = path
    return found


def _named(module: str, path: Path) -> set[str]:
    """Every dotted name ``module`` imports (function-level imports included), made absolute."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({module: project modules it imports}, {module: outside top-level packages it imports})."""
    sources = _sources()
    edges, outside = {}, {}
    for module, path in sources.items():
        named = _named(module, path)
        edges[module] = {n for n in named if n in sources and n != module}
        outside[module] = {n.split(".")[0] for n in named
                           if n.split(".")[0] not in ROOTS and n}
    return edges, outside


def _reach(edges: Mapping[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def with_packages(edges: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """The edges plus, for each imported ``a.b.c``, the packages ``a.b`` and ``a``, whose
    ``__init__`` Python runs first: what an import executes (for the torch rule; a cycle through a
    package's ``__init__`` importing its own submodules is how packages work, not a cycle)."""
    return {module: names | {parent for name in names for parent in _parents(name)
                             if parent in edges and parent != module}
            for module, names in edges.items()}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One import cycle (a path back to its start) per strongly connected component of more than
    one module."""
    reach = {m: _reach(edges, m) for m in edges}
    found, placed = [], set()
    for module in sorted(edges):
        if module in placed or module not in reach[module]:
            continue
        component = {m for m in reach[module] if module in reach[m]}
        placed |= component
        path, parent, todo = [], {module: None}, [module]   # breadth first, back to the start
        while todo and not path:
            here = todo.pop(0)
            for nxt in sorted(edges[here] & component):
                if nxt == module:
                    path = [module]
                    while here is not None:
                        path.append(here)
                        here = parent[here]
                    break
                if nxt not in parent:
                    parent[nxt] = here
                    todo.append(nxt)
        found.append(path[::-1][:-1] + [module] if path else sorted(component))
    return found


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _thin_entry(module: str) -> bool:
    """``benchmarks/<name>.py`` or ``benchmarks/<name>/``: the commands' thin entry points."""
    return module.startswith("benchmarks.") and not _in(module, *ROOMS)


def upward(edges: Mapping[str, set[str]], outside: Mapping[str, set[str]]) -> list[str]:
    """Every import that runs up the floors, as ``importer -> imported: rule``."""
    wrong = []
    for module, names in edges.items():
        for name in sorted(names):
            rule = None
            if _in(module, "pretrain") and _in(name, "benchmarks", "transfer"):
                rule = "pretrain imports neither benchmarks nor transfer"
            elif _in(module, "benchmarks") and _in(name, "transfer"):
                rule = "benchmarks never imports transfer"
            elif _in(name, "benchmarks.runner") and not (
                    _in(module, "benchmarks.runner") or _thin_entry(module)):
                rule = "nothing imports the runner but its thin entry points"
            elif _in(module, "benchmarks.results") and _in(name, "benchmarks.probes",
                                                             "benchmarks.runner"):
                rule = "results import nothing from probes or the runner"
            elif _in(module, "benchmarks.probes") and _in(name, "benchmarks.runner"):
                rule = "probes import nothing from the runner"
            elif _in(module, "transfer") and _in(name, "benchmarks") and not _in(
                    name, "benchmarks.results"):
                rule = "transfer imports only the results of benchmarks"
            if rule:
                wrong.append(f"{module} -> {name}: {rule}")
    executed = with_packages(edges)
    for module in (m for m in edges if _in(m, "benchmarks.results")):
        for reached in sorted({module} | _reach(executed, module)):
            for package in sorted(outside[reached] & set(TORCH)):
                via = "" if reached == module else f" (through {reached})"
                wrong.append(f"{module} -> {package}{via}: results import no torch")
    return wrong


def test_no_import_cycle() -> None:
    edges, _ = graph()
    assert "benchmarks.runner.stages" in edges["benchmarks.runner.executor"]  # the graph is real
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_imports_run_down_the_floors() -> None:
    edges, outside = graph()
    assert "torch" in outside["benchmarks.probes.features"]  # the outside imports are seen
    wrong = upward(edges, outside)
    assert not wrong, "imports up the floors:\n" + "\n".join(wrong)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_a_planted_cycle(edges: dict[str, set[str]],
                                                expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_a_torch_import_reached_from_results_is_named() -> None:
    edges = {"benchmarks.results.report": {"pretrain.files"}, "pretrain.files": set()}
    outside = {"benchmarks.results.report": set(), "pretrain.files": {"torch"}}
    assert upward(edges, outside) == [
        "benchmarks.results.report -> torch (through pretrain.files): results import no torch"]
    # through a package's __init__: importing pretrain.data.voc runs pretrain/data/__init__.py
    edges = {"benchmarks.results.board": {"pretrain.data.voc"}, "pretrain.data.voc": set(),
             "pretrain.data": {"pretrain.data.voc"}, "pretrain": set()}
    outside = {"benchmarks.results.board": set(), "pretrain.data.voc": set(),
               "pretrain.data": {"torch"}, "pretrain": set()}
    assert upward(edges, outside) == [
        "benchmarks.results.board -> torch (through pretrain.data): results import no torch"]
