"""The package import graph is layered: ``stream`` is the engine and imports neither
``connectors`` nor ``operators``; no package imports another that imports it back (a
sub-package and the package holding it are one package's inside); no module imports
itself back through others.

The graph is built by ``grimp`` from the source (function-level imports included,
``if TYPE_CHECKING:`` imports left out since they never run).
"""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp")

TOP = ("stream", "connectors", "operators")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*TOP, exclude_type_checking_imports=True, cache_dir=None)


def _package(graph, module: str) -> str:
    """The package a module belongs to (a package's ``__init__`` belongs to the package itself)."""
    return module if graph.find_children(module) else module.rpartition(".")[0] or module


def _nested(a: str, b: str) -> bool:
    return a.startswith(b + ".") or b.startswith(a + ".")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(edges.get(target, ())))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
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
                        found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_stream_imports_neither_connectors_nor_operators(graph):
    for upper in ("connectors", "operators"):
        chains = graph.find_shortest_chains(importer="stream", imported=upper, as_packages=True)
        assert not chains, f"stream imports {upper}: {sorted(chains)}"


def test_no_import_cycle_between_packages(graph):
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        source = _package(graph, module)
        edges.setdefault(source, set())
        for imported in graph.find_modules_directly_imported_by(module):
            target = _package(graph, imported)
            # a sub-package using its parent's modules (stream.serve and stream.options) is
            # one package's inside; the rule is about packages side by side
            if target != source and not _nested(source, target):
                edges[source].add(target)
    assert _cycles(edges) == []


@pytest.mark.parametrize("top", ["stream", "connectors", "operators"])
def test_no_import_cycle_between_modules(graph, top):
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i.split(".")[0] == top}
             for m in graph.modules if m.split(".")[0] == top}
    assert _cycles(edges) == []
