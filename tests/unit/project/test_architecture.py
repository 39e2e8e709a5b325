"""The house's shape, read from the source with `ast`: pipeline/'s import graph (every import, those inside
functions included) has no circle, each package imports only packages on floors below its own, the ground floor
(core/) imports nothing of modelgate but pipeline.errors and nothing outside the standard library, and no module
is over MAX_LINES lines.

Because imports inside functions are edges of the graph too, an acyclic graph also proves that no import sits
inside a function to break a circle: the ones that remain there keep heavy libraries out of `modelgate --help`.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support.paths import REPO

PACKAGE = REPO / "pipeline"
MAX_LINES = 450

# Floors, low to high. A package imports only packages on lower floors (never one on its own floor, never one
# above): the shared words first, the command line last. `errors` (the one error tree) is below everything.
#   core       Status, StageResult, Verdict, RunDir, the gate kinds, the secret names (the ground floor)
#   util       secrets' redaction, progress, process groups, git
#   config     release.yaml, prompt suites, traffic, pins, release.yaml's public keys
#   model ...  fetching pins; pure judging; the vLLM server and its clients; local tools (lm-eval, benchmark)
#   report     the typed GateReport and its renderings
#   demo       the demo hub (pins and files only)
#   integrations  MLflow and GitHub (the registry reads a baseline's GateReport)
#   releasing  approve, promote, rollback, policy, signing, the chain of trust
#   gate       one gate: its stages use the checks, tools and serving; it signs with releasing and records
#   watch      after promotion: production's metrics (Prometheus), judged; rollback on evidence through releasing
#   cli        the command line; __main__ (`python -m pipeline`) above it
FLOORS: tuple[frozenset[str], ...] = tuple(frozenset(f.split()) for f in (
    "errors", "core", "util", "config", "model checks serving tools", "report demo", "integrations", "releasing",
    "gate watch", "cli", "__main__"))


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__.py)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(package: str, source: str, known: set[str]) -> Iterator[tuple[int, str, bool]]:
    """(line, imported module, inside a function) for every import in `source`, at any depth. `from a import b`
    imports a.b when that is a module, else a; relative imports are resolved against `package` (the importing
    module's package)."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[int, str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield from ((child.lineno, alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                for alias in child.names:
                    name = f"{base}.{alias.name}"
                    yield child.lineno, name if name in known else base, in_function
            yield from walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))
    yield from walk(ast.parse(source), False)


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the modules of the package it imports (anywhere in its source)."""
    found = modules(root)
    known = set(found)

    def owner(name: str) -> str:  # `import pipeline.x.y.Name`-style targets: the longest module prefix
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {}
    for module, path in found.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = {owner(name) for _, name, _ in imports(package, path.read_text(), known)
                   if name.split(".")[0] == root.name}
        edges[module] = {t for t in targets if t and t != module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    """pipeline.gate.stages.load -> gate; pipeline.errors -> errors."""
    return module.split(".")[1] if "." in module else module


def floor_of(package: str) -> int:
    return next(i for i, floor in enumerate(FLOORS) if package in floor)


def test_the_import_graph_has_no_circle_between_modules():
    edges = graph()
    assert len(edges) > 100 and "pipeline.core.result" in edges["pipeline.gate.runner"]  # the walk sees the package
    assert cycles(edges) == []


def test_the_import_graph_has_no_circle_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in graph().items():
        packages.setdefault(package_of(module), set()).update(package_of(t) for t in targets)
    assert cycles({p: t - {p} for p, t in packages.items()}) == []


def test_every_package_is_on_a_floor_and_imports_only_floors_below_it():
    edges = graph()
    unplaced = sorted({package_of(m) for m in edges} - {p for floor in FLOORS for p in floor} - {"pipeline"})
    assert unplaced == [], f"place these packages on a floor in FLOORS: {unplaced}"
    upward = sorted(f"{module} imports {target} (floor {floor_of(package_of(target))} >= "
                    f"{floor_of(package_of(module))})"
                    for module, targets in edges.items() if module != "pipeline" for target in targets
                    if package_of(target) != package_of(module)
                    and floor_of(package_of(target)) >= floor_of(package_of(module)))
    assert upward == [], "\n".join(upward)


def test_core_imports_only_the_standard_library_and_pipeline_errors():
    problems = []
    for module, path in modules().items():
        if package_of(module) != "core":
            continue
        for line, name, _ in imports("pipeline.core", path.read_text(), set(modules())):
            top = name.split(".")[0]
            if top == "pipeline" and name != "pipeline.errors" and not name.startswith("pipeline.core") \
                    or top not in ("pipeline", "__future__") and top not in sys.stdlib_module_names:
                problems.append(f"{path.relative_to(REPO)}:{line}: imports {name}")
    assert problems == []


def test_no_module_is_over_the_size_limit():
    sizes = {path.relative_to(REPO): len(path.read_text().splitlines()) for path in modules().values()}
    assert max(sizes.values()) > 200  # the count reads real files
    assert {str(p): n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_the_walk_sees_every_form_of_import(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/d.py"):
        (root / name).write_text("")
    (root / "a.py").write_text("import pkg.b\n\ndef f():\n    from pkg import c\n")
    (root / "b.py").write_text("from .sub import d\nfrom pkg.sub.d import NAME\n")
    (root / "sub" / "d.py").write_text("from .. import a\nimport json\n")
    known = set(modules(root))
    assert [(name, inside) for _, name, inside in imports("pkg", (root / "a.py").read_text(), known)] == [
        ("pkg.b", False), ("pkg.c", True)]
    edges = graph(root)
    assert edges["pkg.a"] == {"pkg.b", "pkg.c"}  # the one inside a function counts too
    assert edges["pkg.b"] == {"pkg.sub.d"}
    assert edges["pkg.sub.d"] == {"pkg.a"}
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.sub.d"]]
