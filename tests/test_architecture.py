"""The import architecture: import-linter's contracts (pyproject.toml, [tool.importlinter]) and a cycle
detector over the import graph of our four packages.

Issue 10 asks for one home per concept; the visible symptom of two homes is an import cycle
(``media/services.py → media/tasks → runner.py → media/services.py`` and
``moderation/services.py → tasks.py → review.py → services.py``). The checks that still fail on that
code are marked ``xfail(strict=True)``: the moment the seams refactor makes one pass, the suite turns red
and the marker must go (it then guards the new shape).
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "content", "media", "moderation")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

SEAMS = "until the seams refactor of issue 10 lands"
CONTRACTS_BROKEN_TODAY = {}
PACKAGES_WITH_CYCLES_TODAY = {}


def _contract_ids() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [contract["id"] for contract in config["tool"]["importlinter"]["contracts"]]


def _xfail_if(broken: dict[str, str], key: str):
    marks = [pytest.mark.xfail(strict=True, reason=broken[key])] if key in broken else []
    return pytest.param(key, marks=marks, id=key)


def test_every_contract_is_checked_here():
    """A contract added to pyproject.toml is run by this file (the parametrisation reads the same file),
    and every known-broken contract named above still exists."""
    ids = _contract_ids()
    assert len(ids) == len(set(ids)), ids
    assert set(CONTRACTS_BROKEN_TODAY) <= set(ids)


@pytest.mark.parametrize("contract_id", [_xfail_if(CONTRACTS_BROKEN_TODAY, cid) for cid in _contract_ids()])
def test_import_contract_kept(contract_id):
    """`lint-imports --contract ID` (import-linter, configured in pyproject.toml) exits 0."""
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--contract", contract_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"contract {contract_id} is broken:\n{proc.stdout}{proc.stderr}"


# --- the cycle detector ------------------------------------------------------------------------------


def strongly_connected_components(graph: grimp.ImportGraph, modules: Iterable[str]) -> list[set[str]]:
    """Tarjan's algorithm over the direct imports between ``modules``; only components that form a
    cycle (more than one module, or a module importing itself) are returned, largest first."""
    nodes = set(modules)
    succ = {m: sorted(graph.find_modules_directly_imported_by(m) & nodes) for m in sorted(nodes)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0

    for root in sorted(nodes):
        if root in index:
            continue
        # Iterative DFS: (node, iterator position) frames, so deep graphs do not hit the recursion limit.
        work = [(root, 0)]
        while work:
            node, pos = work.pop()
            if pos == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            for i in range(pos, len(succ[node])):
                nxt = succ[node][i]
                if nxt not in index:
                    work.append((node, i + 1))
                    work.append((nxt, 0))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in succ[node]:
                        found.append(component)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return sorted(found, key=lambda c: (-len(c), sorted(c)))


def cycle_path(graph: grimp.ImportGraph, component: set[str]) -> list[str]:
    """One shortest cycle through the component's first module (by name): ``[a, b, ..., a]``."""
    start = min(component)
    best: tuple[str, ...] | None = None
    for nxt in sorted(graph.find_modules_directly_imported_by(start) & component):
        chain = (start,) if nxt == start else graph.find_shortest_chain(importer=nxt, imported=start)
        if chain is not None and (best is None or len(chain) < len(best)):
            best = chain
    assert best is not None, component
    return [start, *best] if best != (start,) else [start, start]


def describe_cycle(graph: grimp.ImportGraph, path: list[str]) -> str:
    """``a (l.12) -> b (l.3) -> a``: each arrow names the lines of the importing module."""
    parts = []
    for importer, imported in zip(path, path[1:], strict=False):
        lines = sorted(
            {d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)}
        )
        parts.append(f"{importer} (l.{','.join(map(str, lines))})")
    return " -> ".join([*parts, path[-1]])


def find_cycles(graph: grimp.ImportGraph, modules: Iterable[str]) -> list[str]:
    """Every import cycle among ``modules``, one readable path per strongly connected component."""
    components = strongly_connected_components(graph, modules)
    return [describe_cycle(graph, cycle_path(graph, c)) for c in components]


@pytest.fixture(scope="module")
def project_graph() -> grimp.ImportGraph:
    # Imports under `if TYPE_CHECKING:` never run, so they cannot make a runtime cycle. Imports inside
    # functions do count: they are how today's cycles are hidden, and they are cycles all the same.
    return grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)


def test_cycle_detector_reports_the_path():
    """The detector itself, on a graph built by hand: it finds both cycles, reports each as a path
    with line numbers, and leaves the acyclic part alone."""
    graph = grimp.ImportGraph()
    for importer, imported, line in [
        ("app.services", "app.tasks", 10),
        ("app.tasks", "app.runner", 4),
        ("app.runner", "app.services", 7),
        ("app.runner", "app.models", 8),
        ("app.models", "app.models", 1),
        ("app.api", "app.services", 3),
    ]:
        graph.add_import(
            importer=importer, imported=imported, line_number=line, line_contents=f"import {imported}"
        )
    assert find_cycles(graph, graph.modules) == [
        "app.runner (l.7) -> app.services (l.10) -> app.tasks (l.4) -> app.runner",
        "app.models (l.1) -> app.models",
    ]
    graph.remove_import(importer="app.runner", imported="app.services")
    graph.remove_import(importer="app.models", imported="app.models")
    assert find_cycles(graph, graph.modules) == []


@pytest.mark.parametrize("package", [_xfail_if(PACKAGES_WITH_CYCLES_TODAY, p) for p in PACKAGES])
def test_no_import_cycle_through(package, project_graph):
    """No import cycle among config/content/media/moderation passes through a module of ``package``."""
    cycles = [
        f"{describe_cycle(project_graph, cycle_path(project_graph, component))}"
        f"  (modules on cycles with it: {', '.join(sorted(component))})"
        for component in strongly_connected_components(project_graph, project_graph.modules)
        if any(m == package or m.startswith(package + ".") for m in component)
    ]
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_every_module_imports():
    """Every module of the four packages imports, migrations and management commands included: a
    dependency missing from requirements/*.txt, or an import-time cycle in a module that nothing
    imported before, fails here with the module's name."""
    failures = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
            try:
                importlib.import_module(info.name)
            except Exception as exc:  # collect every failure, not just the first
                failures.append(f"{info.name}: {type(exc).__name__}: {exc}")
    assert failures == []
