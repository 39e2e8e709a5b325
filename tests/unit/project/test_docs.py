"""The documentation: the pages in docs/ build into a site with mkdocs' strict mode (a broken link, an unknown
anchor or a page missing from the nav fails it), and the README, the front door, stays one screen-ish and links
only to files that exist."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.paths import REPO

README_MAX_LINES = 200
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_docs_build_in_strict_mode(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "WARNING" not in log, log
    pages = {p.relative_to(REPO / "docs").with_suffix("").as_posix() for p in (REPO / "docs").glob("*.md")}
    built = {p for p in pages if (tmp_path / "site" / ("" if p == "index" else p) / "index.html").is_file()}
    assert built == pages, pages - built


def test_the_readme_is_a_front_door_whose_links_exist():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    links = [link for link in LINK.findall(text) if "://" not in link]
    assert len(links) >= 10, links  # the links are read, not none
    missing = [link for link in links if not (REPO / link).exists()]
    assert missing == []
    # every page of the docs is reachable from the front door
    assert {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")} - {"docs/index.md"} <= set(links)
