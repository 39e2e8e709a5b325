"""The claims table (docs/claims.md) names only tests that exist: it cannot drift from the suite."""

from __future__ import annotations

import ast
import re

from tests.support.paths import REPO

NAMED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def claims_section() -> str:
    text = (REPO / "docs" / "claims.md").read_text()
    assert text.startswith("# Claims and the tests that prove them\n")
    return text


def defined_tests(path: str) -> set[str]:
    tree = ast.parse((REPO / path).read_text())
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")}


def test_every_test_the_claims_table_names_exists():
    named = NAMED.findall(claims_section())
    assert len(named) >= 40, named  # the table is read, not empty
    missing = [f"{path}::{name}" for path, name in named
               if not (REPO / path).is_file() or name not in defined_tests(path)]
    assert missing == []


def test_every_exit_code_has_a_row():
    rows = claims_section()
    for code in (0, 1, 2, 3, 4, 5, 6, 7, 130):
        assert re.search(rf"^\| exit {code}:", rows, re.M), f"no claim row for exit {code}"


def test_every_test_path_in_the_table_is_a_named_test_it_reads():
    """A test path the table spells without its backticks (or without `::test_`) would be skipped by the check
    above: every `tests/...py` the table mentions must be one it reads, or a whole module in backticks."""
    section = claims_section()
    mentions = re.findall(r"(?<![\w/])tests/(?!support/)[\w/]+\.py(?:::\w+)?", section)  # support: not tests
    read = {f"{path}::{name}" for path, name in NAMED.findall(section)}
    whole_modules = set(re.findall(r"`(tests/[\w/]+\.py)`", section))
    stray = [m for m in mentions if m not in read and m not in whole_modules]
    assert stray == [], stray
