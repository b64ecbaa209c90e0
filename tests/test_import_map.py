"""The package's import map, read from the source with ``ast`` (nothing is imported).

Every ``import`` counts, at module level or inside a function: a function-level
import hides a circle from Python, not from a reader. Checked here:

* no import circles between modules of ``vlmo_composer``;
* the layers: ``model/`` imports nothing above it, ``data/`` nothing from the
  commands or the tasks, the building blocks (checkpoints, objectives, metrics,
  loggers, callbacks) nothing from tasks or the commands, tasks nothing from the
  commands (train, eval, inference), and ``common/`` nothing from the rest of the package.

An edge ``a -> b`` means a statement in ``a`` imports ``b`` (``from p import name``
counts as importing ``p.name`` when that is a module, else ``p``). Importing
``p.q`` also runs ``p/__init__.py``; that implicit edge is left out, as Python
resolves it before ``q`` starts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vlmo_composer"

COMMANDS = ("training", "evaluation", "inference")
# package (folder or module) under vlmo_composer -> what it must never import.
FORBIDDEN = {
    "model": ("objectives", "tasks", "training", "evaluation", "inference", "data", "callbacks", "loggers",
              "metrics", "checkpoints"),
    "data": ("training", "evaluation", "tasks", "inference"),
    "checkpoints": ("tasks", *COMMANDS),
    "objectives": ("tasks", *COMMANDS),
    "metrics": ("tasks", *COMMANDS),
    "loggers": ("tasks", *COMMANDS),
    "callbacks": ("tasks", *COMMANDS),
    "tasks": COMMANDS,  # tasks never import training/, evaluation/ or the inference API
}
# Modules that import nothing else of the package.
LEAVES = ("common",)

Edge = tuple[str, int]  # (importing file, line)


def module_files() -> dict[str, tuple[Path, bool]]:
    """``{dotted module name: (file, is a package's __init__)}`` for every module of the package."""
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def nearest_module(name: str, modules: dict) -> str | None:
    """``name`` or its longest prefix that is a module of the package (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_modules(module: str, path: Path, is_package: bool, modules: dict) -> dict[str, Edge]:
    """The package's modules that ``module`` imports anywhere in its source, each with where."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    found: dict[str, Edge] = {}

    def add(name: str | None, node: ast.AST) -> None:
        if name and name != module and name not in found:
            found[name] = (str(path.relative_to(ROOT)), node.lineno)

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(nearest_module(alias.name, modules), node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..a import b
                base = here[: len(here) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in modules else nearest_module(source, modules), node)
    return found


@pytest.fixture(scope="module")
def import_map() -> dict[str, dict[str, Edge]]:
    modules = module_files()
    return {name: imported_modules(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def test_the_map_covers_the_package(import_map):
    """The checks below cannot pass by reading nothing."""
    assert len(import_map) > 50
    for module in ("vlmo_composer.model.vlmo", "vlmo_composer.training.train", "vlmo_composer.evaluation.cli",
                   "vlmo_composer.data.loaders", "vlmo_composer.inference", "vlmo_composer.common.errors"):
        assert module in import_map
    assert "vlmo_composer.training.builders" in import_map["vlmo_composer.training.train"]
    # Function-level imports are on the map (zeroshot loads the inference API inside a function).
    assert "vlmo_composer.inference" in import_map["vlmo_composer.evaluation.zeroshot"]


def strongly_connected(graph: dict[str, dict]) -> list[list[str]]:
    """Tarjan's components with more than one module (iterative: no recursion limit)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def one_cycle(graph: dict[str, dict], component: list[str]) -> list[str]:
    """A shortest circle through the component's first module: ``[a, b, ..., a]``."""
    start, members = component[0], set(component)
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child in members and child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return component


def describe_cycle(graph: dict[str, dict[str, Edge]], cycle: list[str]) -> str:
    steps = [f"  {a} -> {b}  ({graph[a][b][0]}:{graph[a][b][1]})" for a, b in zip(cycle, cycle[1:])]
    return "\n".join(steps)


def test_no_import_cycles(import_map):
    components = strongly_connected(import_map)
    cycles = [one_cycle(import_map, c) for c in components]
    report = "\n\n".join(f"circle {' -> '.join(c)} (modules that reach each other: {', '.join(m)}):\n"
                         f"{describe_cycle(import_map, c)}" for c, m in zip(cycles, components))
    assert not cycles, f"import circles (move what both sides use below both):\n{report}"


def layer(module: str) -> str | None:
    """``vlmo_composer.data.loaders`` -> ``data``; ``vlmo_composer.inference`` -> ``inference``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_layers(import_map):
    problems = []
    for module, imports in sorted(import_map.items()):
        own = layer(module)
        for target, (file, line) in sorted(imports.items()):
            target_layer = layer(target)
            if target_layer in FORBIDDEN.get(own, ()) or (own in LEAVES and target_layer != own):
                problems.append(f"  {file}:{line}: {own}/ imports {target}")
    assert not problems, "imports from a higher layer (move the used piece down to the importer's layer):\n" + \
        "\n".join(problems)


def test_the_checks_catch_what_they_check():
    """A made-up map with a circle and an upward import fails both checks."""
    graph = {"vlmo_composer.a": {"vlmo_composer.b": ("a.py", 1)},
             "vlmo_composer.b": {"vlmo_composer.c": ("b.py", 2)},
             "vlmo_composer.c": {"vlmo_composer.a": ("c.py", 3)},
             "vlmo_composer.model.x": {"vlmo_composer.training.y": ("x.py", 4)},
             "vlmo_composer.training.y": {}}
    (component,) = strongly_connected(graph)
    assert one_cycle(graph, component) == ["vlmo_composer.a", "vlmo_composer.b", "vlmo_composer.c", "vlmo_composer.a"]
    with pytest.raises(AssertionError, match="x.py:4: model/ imports vlmo_composer.training.y"):
        test_layers(graph)
