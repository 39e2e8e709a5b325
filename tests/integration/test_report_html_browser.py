"""The HTML report opens in headless Chromium (Debian's, driven by Playwright; no browser download) with no
console error, shows the verdict and the inline plot, and a screenshot is taken."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.integration
FIXTURE = REPO / "tests" / "fixtures" / "reports" / "rejected-load"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def render(tmp_path: Path, report: dict) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    (run / "report.json").write_text(json.dumps(report))
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "report", str(run / "report.json"), "--format", "html",
                           "--output", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return out


def hostile(report: dict) -> dict:
    """Model output that tries to run script and load remote content."""
    fmt = next(s for s in report["stages"] if s["name"] == "format")
    fmt["details"]["failing_cases"][0]["output"] = (
        '<script>console.error("injected")</script><img src="https://evil.example/x.png" onerror="alert(1)">')
    return report


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by scripts/setup.sh")
def test_html_report_renders_in_chromium_without_console_errors(tmp_path):
    from playwright.sync_api import sync_playwright

    report = hostile(json.loads((FIXTURE / "report.json").read_text()))
    page_file = render(tmp_path, report)
    html = page_file.read_text()
    assert "<script>" not in html and "https://evil" not in html.replace("&quot;https://evil", "")  # escaped text only
    problems, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console",
                    lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            heading = page.inner_text("header h1")
            plot_width = page.eval_on_selector("img.plot", "img => img.complete ? img.naturalWidth : 0")
            injected = page.inner_text("section pre")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []  # self-contained: nothing fetched
    assert heading.startswith("modelgate: REJECTED: smollm2-support")
    assert plot_width > 300
    assert "<script>" in injected  # shown as text, not run
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    shutil.copy(shot, tmp_path / "keep.png")
    print(f"screenshot: {shot} ({len(png)} bytes)")
