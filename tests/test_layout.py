"""The layout's rules, read from the source: which folder may import which.

docs/architecture.md draws the pipeline; this test keeps the code to it. Every
``import`` counts, wherever it stands (module level, inside a function, under
``TYPE_CHECKING``): a lazy import is still a dependency a reader must follow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = {
    "instrumentation": ROOT / "instrumentation" / "segwatch" / "instrumentation",
    "collector": ROOT / "collector" / "segwatch" / "collector",
    "clickhouse": ROOT / "clickhouse" / "segwatch" / "clickhouse",
}

SHARED = "(shared)"
"""The collector's root modules: the types the stages pass on, errors, compiled loops, metrics."""

ALLOWED: dict[str, set[str]] = {
    SHARED: set(),
    "config": set(),
    "store": {"config"},
    "segment": {"store", "config"},
    "aggregate": {"segment", "store", "config"},
    "decode": {"store", "config"},
    "durable": {"decode", "aggregate", "store", "config"},
    "receive": {"durable", "config"},
    "profile": {"aggregate", "segment", "store", "config"},
    "serve": {"config"},
    "report": set(),
    "service": {
        "report",
        "serve",
        "receive",
        "durable",
        "decode",
        "profile",
        "aggregate",
        "segment",
        "store",
        "config",
    },
    "cli": {"service", "report", "serve", "durable", "profile", "store", "config"},
}
"""For each folder of ``segwatch.collector``, the folders it may import (besides itself and SHARED).

Imports point one way: from the process shell (``cli``, ``service``) through the
pipeline's stages down to ``config`` and the shared root modules. ``durable``
sits above ``decode`` because its processor decodes a request before making it
durable (and again when it replays the spool); ``aggregate`` above ``segment``
because the aggregator asks the segmentation plan where each call falls.
"""

PACKAGES_BELOW = {
    "instrumentation": set(),
    "clickhouse": set(),
    "collector": {"instrumentation", "clickhouse"},
}
"""Which of the three subpackages each may import (a service installs instrumentation alone)."""


def _modules() -> Iterator[tuple[str, Path]]:
    for package, folder in SOURCE_ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(("segwatch", package, *parts)), path


def _imports(name: str, path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file, made absolute.

    ``from package import module`` counts as importing the module, not the package's names.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = []
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    yield f"{base}.{alias.name}", [], node.lineno
                else:
                    names.append(alias.name)
            if names:
                yield base, names, node.lineno


MODULES = dict(_modules())


def _resolve(target: str) -> str | None:
    """The segwatch module ``target`` names (a module, or a package's ``__init__``), if any."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def _folder(module: str) -> str:
    """The collector folder a module lives in, or SHARED for the root modules."""
    path = MODULES[module]
    inside = path.relative_to(SOURCE_ROOTS["collector"]).parts
    return inside[0] if len(inside) > 1 else SHARED


def _edges() -> Iterator[tuple[str, str, list[str], int]]:
    for name, path in MODULES.items():
        for target, names, line in _imports(name, path):
            resolved = _resolve(target) if target.startswith("segwatch.") else None
            if resolved is not None and resolved != name:
                yield name, resolved, names if resolved == target else [], line


def test_the_three_packages_depend_one_way() -> None:
    wrong = [
        f"{source} imports {target} (line {line})"
        for source, target, _, line in _edges()
        if (a := source.split(".")[1]) != (b := target.split(".")[1]) and b not in PACKAGES_BELOW[a]
    ]
    assert not wrong, "\n".join(wrong)


def test_collector_folders_import_only_downward() -> None:
    folders = {_folder(n) for n in MODULES if n.startswith("segwatch.collector.")}
    assert folders <= set(ALLOWED), f"folders without a rule: {folders - set(ALLOWED)}"
    wrong = []
    for source, target, _, line in _edges():
        if not (
            source.startswith("segwatch.collector.") and target.startswith("segwatch.collector")
        ):
            continue
        if source == "segwatch.collector":  # the package's façade re-exports the public API
            continue
        if target == "segwatch.collector":  # the façade imports profile/: not a shared module
            wrong.append(f"{source} imports the package façade segwatch.collector at line {line}")
            continue
        a, b = _folder(source), _folder(target)
        if a != b and b != SHARED and b not in ALLOWED[a]:
            wrong.append(f"{source} ({a}/) imports {target} ({b}/) at line {line}")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_names() -> None:
    wrong = [
        f"{source} line {line}: from {target} import {', '.join(private)}"
        for source, target, names, line in _edges()
        if (private := [n for n in names if n.startswith("_") and not n.startswith("__")])
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for source, target, _, _ in _edges():
        graph[source].add(target)
    cycles = _cycles(graph)
    assert not cycles, "\n".join(" → ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("folder", sorted(set(ALLOWED) - {SHARED}))
def test_each_collector_folder_states_its_contract(folder: str) -> None:
    """Each folder's ``__init__`` says what enters, what leaves, and which threads call it."""
    init = SOURCE_ROOTS["collector"] / folder / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    lowered = doc.lower()
    missing = [w for w in ("enters", "leaves", "thread") if w not in lowered]
    assert not missing, f"{init}: the docstring does not say {missing}"
