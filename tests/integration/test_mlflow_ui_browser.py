"""MLflow's own UI, as an auditor opens it: a real `mlflow server` holding a promoted and a rejected version of a
model, driven in headless Chromium (Debian's, through Playwright). The model page shows each version's verdict in
its description and which version is production; a gate run's traces list its prompt cases with their
assessments, also beside production's run (MLflow's "compare to"). Screenshots go to docs/ (the README's
section for auditors shows them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.core.result import Status
from tests.support.git import git
from tests.support.paths import REPO
from tests.support.team import approve, make_team, promote, record_gate

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
DOCS = REPO / "docs"
ABOUT = "SmolLM2-135M fine-tuned to answer support tickets as JSON"
# screenshots are written to docs/ only when asked (MODELGATE_SCREENSHOTS=1): a test run leaves the tree clean
SHOTS = DOCS if os.environ.get("MODELGATE_SCREENSHOTS") == "1" else None


def _team(tmp_path: Path, model: str) -> Path:
    config = make_team(tmp_path / "team", model)
    data = yaml.safe_load(config.read_text())
    data["model"]["description"] = ABOUT
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    git(config.parent, "commit", "--quiet", "-am", "describe the model")
    return config


def _without_assistant(page) -> None:
    """Close MLflow's assistant side panel, if it is open, so the screenshots show the tables at full width."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count() and close.first.is_visible():
        close.first.click()
        close.first.wait_for(state="hidden", timeout=10_000)  # the panel is gone (a small button stays)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by scripts/setup.sh")
def test_mlflow_ui_shows_verdicts_production_and_per_case_assessments(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    from pipeline.integrations.traces import TRACES_TAG

    uri, model = mlflow_server, "support-bot-ui"
    config = _team(tmp_path, model)
    good = record_gate(config, uri, 1, cases=6)
    assert approve(config, uri, good, "bob@example.com", "format and intent at production's level").returncode == 0
    proc = promote(config, uri, good, "alice")
    assert proc.returncode == 0, proc.stderr
    bad = record_gate(config, uri, 2, Status.FAILED, author="carol@example.com", cases=6)

    client = MlflowClient(tracking_uri=uri)
    described = {v: client.get_model_version(model, v).description for v in (good, bad)}
    assert described[bad].startswith("REJECTED · ")
    assert described[good].startswith("PASSED · ")
    assert "APPROVED by bob@example.com: format and intent at production's level" in described[good]
    assert "PROMOTED to production by alice; approved by bob@example.com" in described[good]
    about = client.get_registered_model(model).description
    assert about.startswith(ABOUT) and f"Production: v{good} since " in about
    run_id = client.get_model_version(model, bad).run_id
    run = client.get_run(run_id)
    assert run.data.tags["mlflow.user"] == "carol@example.com"
    assert run.data.tags[TRACES_TAG] == "6 traces"
    assert {"report.html", "version.json"} <= {a.path for a in client.list_artifacts(run_id)}
    # few, short version tags: the file digests are the gate run's version.json, not a JSON blob in the table
    assert set(client.get_model_version(model, bad).tags) == {
        "modelgate.verdict", "modelgate.revision", "modelgate.gate_run_id", "modelgate.baseline_version",
        "modelgate.signature.status"}
    experiment_id = run.info.experiment_id
    production_run = client.get_model_version(model, good).run_id
    production_name = client.get_run(production_run).info.run_name

    shots = SHOTS or tmp_path
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1700, "height": 1000})
            page.goto(f"{uri}/#/models/{model}")
            page.get_by_text("REJECTED · ", exact=False).first.wait_for(timeout=30_000)
            page.get_by_text(ABOUT, exact=False).first.wait_for(timeout=10_000)
            _without_assistant(page)
            model_text = page.inner_text("body")
            rows = {v: page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {v}", exact=True))
                    .first.inner_text(timeout=10_000) for v in (good, bad)}
            page.screenshot(path=str(shots / "mlflow-model-page.png"))

            page.goto(f"{uri}/#/experiments/{experiment_id}/runs/{run_id}/traces")
            page.get_by_text("support/case_05", exact=False).first.wait_for(timeout=30_000)
            _without_assistant(page)
            traces_text = page.inner_text("body")
            page.screenshot(path=str(shots / "mlflow-gate-traces.png"))

            # the candidate's run beside production's, item by item
            page.goto(f"{uri}/#/experiments/{experiment_id}/runs/{run_id}/traces?compareToRunUuid={production_run}")
            page.get_by_text(production_name, exact=False).first.wait_for(timeout=30_000)
            page.get_by_text("support/case_05", exact=False).first.wait_for(timeout=30_000)
            _without_assistant(page)
            compare_text = page.inner_text("body")
            page.screenshot(path=str(shots / "mlflow-gate-compare.png"))
        finally:
            browser.close()
    assert "PASSED · " in model_text and "REJECTED · " in model_text
    assert "PASSED · " in rows[good] and "REJECTED · " in rows[bad], rows  # each version's row: its verdict
    assert "modelgate.verdict" in rows[bad] and "rejected" in rows[bad]
    assert f"Production: v{good} since" in model_text
    assert "modelgate.files" not in model_text and '"model.safetensors"' not in model_text
    assert all(f"support/case_{i:02d}" in traces_text for i in range(6))
    assert "passed" in traces_text and "json_schema" in traces_text
    assert production_name in compare_text and "support/case_05" in compare_text
    for name in ("mlflow-model-page.png", "mlflow-gate-traces.png", "mlflow-gate-compare.png"):
        png = (shots / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
