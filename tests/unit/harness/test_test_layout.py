"""The test suite's own layout: helpers live in tests/support/, and no test module imports another test module
or a conftest.py (pytest loads those itself; importing them runs them twice and ties tests together). The unit
tests mirror the house: each module lives in the folder of the pipeline/ package it tests (tests/unit/gate/ for
pipeline/gate/), or in harness/ (the test suite's own helpers and layout) or project/ (the repository as a whole:
the architecture, the README's claims, the workflows)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO

TESTS = REPO / "tests"
UNIT = TESTS / "unit"
PIPELINE = REPO / "pipeline"
NOT_SUBSYSTEMS = ("harness", "project")  # unit test folders that mirror no package of pipeline/


def python_sources() -> list[Path]:
    """Every Python file under tests/ but the bad-input corpus (data, not code)."""
    return sorted(p for p in TESTS.rglob("*.py") if "corpus" not in p.relative_to(TESTS).parts)


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in `source`; relative imports resolved against `package`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            # `from tests import conftest` imports the module tests.conftest
            found += [(node.lineno, f"{base}.{alias.name}" if base == "tests" else base) for alias in node.names]
    return found


def forbidden_imports(path: Path, source: str | None = None) -> list[str]:
    """`file:line: imports module` for each import of a tests.* module outside tests.support."""
    package = ".".join(path.relative_to(REPO).parts[:-1])
    found = imported_modules(path.read_text() if source is None else source, package)
    return [f"{path.relative_to(REPO)}:{line}: imports {module}" for line, module in found
            if (module == "tests" or module.startswith("tests."))
            and not (module == "tests.support" or module.startswith("tests.support."))]


def test_only_tests_support_is_imported_from_tests():
    sources = python_sources()
    assert any(p.name == "conftest.py" for p in sources) and len(sources) > 30  # the walk finds the suite
    problems = [problem for path in sources for problem in forbidden_imports(path)]
    assert problems == [], "import helpers from tests.support, not from test modules or conftest.py:\n" + \
        "\n".join(problems)


def test_the_check_catches_each_form_of_import():
    module = TESTS / "e2e" / "test_example.py"
    lines = ["import tests.conftest", "from tests.e2e.test_gate_e2e import gate_env",
             "from tests.integration.releasing import git", "from tests import conftest", "from . import conftest",
             "from .test_load_e2e import SMALL_LOAD", "import tests.unit.test_fetch as f"]
    allowed = ["from tests.support import cli", "from tests.support.releases import write_release",
               "import tests.support.processes", "from pipeline import cli", "import os"]
    found = forbidden_imports(module, "\n".join(lines + allowed))
    assert [f.split(": imports ")[1] for f in found] == [
        "tests.conftest", "tests.e2e.test_gate_e2e", "tests.integration.releasing", "tests.conftest",
        "tests.e2e", "tests.e2e.test_load_e2e", "tests.unit.test_fetch"]


def test_every_integration_and_e2e_module_carries_its_marker():
    """`-m "not e2e"` (or `-m integration`) selects what it says: each module marks all of its tests."""
    for kind in ("integration", "e2e"):
        for path in sorted((TESTS / kind).glob("test_*.py")):
            tree = ast.parse(path.read_text())
            marked = any(isinstance(node, ast.Assign)
                         and any(getattr(t, "id", "") == "pytestmark" for t in node.targets)
                         and f"pytest.mark.{kind}" in ast.unparse(node.value) for node in tree.body)
            assert marked, f"{path.relative_to(REPO)} lacks pytestmark = pytest.mark.{kind}"


def test_test_module_basenames_are_unique_across_directories():
    """pytest imports test modules by basename (rootdir mode, no __init__.py): two test_x.py in different
    directories stop the whole collection ("import file mismatch"), which only shows when both are collected."""
    seen: dict[str, list[str]] = {}
    for path in TESTS.rglob("test_*.py"):
        if "corpus" not in path.relative_to(TESTS).parts:
            seen.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def misplaced_unit_module(path: Path) -> str | None:
    """Why the unit test module at `path` is out of place, or None: its folder under tests/unit/ must be a
    package of pipeline/ (tests/unit/gate/ or tests/unit/gate/stages/ for pipeline/gate/stages/), or one of
    NOT_SUBSYSTEMS."""
    folder = path.relative_to(UNIT).parent.parts
    if not folder:
        return f"{path.relative_to(REPO)}: directly in tests/unit/, not in a subsystem folder"
    if folder in [(name,) for name in NOT_SUBSYSTEMS] or (PIPELINE.joinpath(*folder) / "__init__.py").is_file():
        return None
    return f"{path.relative_to(REPO)}: pipeline/{'/'.join(folder)}/ is no package of pipeline/ (nor is it " \
        f"one of {', '.join(NOT_SUBSYSTEMS)})"


def test_every_unit_test_module_lives_in_the_folder_of_its_subsystem():
    modules = sorted(UNIT.rglob("test_*.py"))
    assert len(modules) > 40  # the walk finds the unit tests
    problems = [problem for path in modules if (problem := misplaced_unit_module(path))]
    assert problems == [], "put each unit test module in tests/unit/<package of pipeline/>/:\n" + "\n".join(problems)
    folders = {path.relative_to(UNIT).parts[0] for path in modules}
    assert set(NOT_SUBSYSTEMS) <= folders and len(folders) > 10  # the house is mirrored, not one folder


def test_the_layout_check_places_each_kind_of_path():
    assert misplaced_unit_module(UNIT / "gate" / "test_x.py") is None
    assert misplaced_unit_module(UNIT / "gate" / "stages" / "test_x.py") is None
    assert misplaced_unit_module(UNIT / "harness" / "test_x.py") is None
    assert "directly in tests/unit/" in (misplaced_unit_module(UNIT / "test_x.py") or "")
    assert "no package of pipeline/" in (misplaced_unit_module(UNIT / "gating" / "test_x.py") or "")
    assert "no package of pipeline/" in (misplaced_unit_module(UNIT / "config" / "schemas" / "test_x.py") or "")
    assert "no package of pipeline/" in (misplaced_unit_module(UNIT / "harness" / "more" / "test_x.py") or "")
