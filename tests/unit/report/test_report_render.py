"""Renderings of real gate reports (tests/fixtures/reports/: a rejected gate with failing prompt cases, load
results and its plot; a passed gate without a load test) and `modelgate report --format ... --output`."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.cli import main
from pipeline.report import console, html, markdown
from pipeline.report.document import GateReport
from tests.support.paths import REPO

FIXTURES = REPO / "tests" / "fixtures" / "reports"


def fixture(tmp_path, name):
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    return run / "report.json"


def test_pr_comment_of_a_rejected_gate_starts_with_the_verdict_then_tables_cases_and_load(tmp_path, monkeypatch):
    monkeypatch.delenv("MODELGATE_MLFLOW_UI_URL", raising=False)
    md = markdown.render(GateReport.load(fixture(tmp_path, "rejected-load")))
    first = md.splitlines()[0]
    assert "REJECTED" in first and "smollm2\\-support v1" in first and "\\(exit 1\\)" in first
    assert "candidate `fa5d7cc5017a9eaeb5a0eb3da8093c69a19796ec`" in md
    assert "### Quality against production" in md and "| support\\_intent/acc |" in md
    assert "### Failing prompt cases (12 of 44)" in md and "'order\\_id' is a required property" in md
    assert "### Load test" in md and "| 5x | 10 |" in md and "TTFT p50/p95/p99 ms" in md
    assert "MLflow run `cabe2541fbb545aab66e6d271f758696`" in md


def test_mlflow_ui_url_turns_the_run_id_into_links(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELGATE_MLFLOW_UI_URL", "https://mlflow.example.com/")
    md = markdown.render(GateReport.load(fixture(tmp_path, "rejected-load")))
    run = "https://mlflow.example.com/#/experiments/1/runs/cabe2541fbb545aab66e6d271f758696"
    assert f"[MLflow run]({run})" in md
    assert f"[load plot]({run}/artifacts/stages/load/latency_vs_concurrency.png)" in md
    assert "[model version](https://mlflow.example.com/#/models/smollm2-support/versions/1)" in md


def test_passed_gate_without_load_has_no_load_section(tmp_path):
    data = GateReport.load(fixture(tmp_path, "passed-no-load"))
    md = markdown.render(data)
    assert md.splitlines()[0].startswith("## ✅ modelgate: PASSED: smollm2\\-support v1 \\(exit 0\\)")
    assert "### Load test" not in md
    page = html.render(data)
    assert "PASSED" in page and "data:image/png" not in page


def test_html_inlines_the_plot_beside_a_moved_report_or_says_it_is_missing(tmp_path):
    path = fixture(tmp_path, "rejected-load")
    data = GateReport.load(path)
    page = html.render(data, report_path=path)  # found in the run dir beside the report
    assert '<img class="plot"' in page and "src=\"data:image/png;base64,iVBORw0KGgo" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched, no link without a UI URL
    (path.parent / "load" / "latency_vs_concurrency.png").unlink()
    load = data.stage("load")
    load.artifacts["latency_vs_concurrency.png"] = str(tmp_path / "gone" / "latency_vs_concurrency.png")
    assert "plot not available" in html.render(data, report_path=path)


@pytest.mark.parametrize("fmt", ["markdown", "json", "html"])
def test_report_command_writes_each_format(tmp_path, capsys, fmt):
    path = fixture(tmp_path, "rejected-load")
    out = tmp_path / f"out.{fmt}"
    assert main(["report", str(path), "--format", fmt, "--output", str(out)]) == 0
    assert f"wrote {fmt} report to {out}" in capsys.readouterr().out
    text = out.read_text()
    if fmt == "json":
        assert json.loads(text)["verdict"] == "rejected"
    elif fmt == "html":
        assert text.startswith("<!doctype html>") and "data:image/png;base64," in text
    else:
        assert "### Load test" in text


def test_report_command_refuses_a_file_that_is_not_a_report(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    assert main(["report", str(bad), "--format", "html"]) == 2
    assert "not a gate report" in capsys.readouterr().err


def test_a_candidate_that_does_not_load_renders_with_its_evidence(tmp_path):
    """A failed serve stage (the candidate does not load), the rest skipped: every rendering names the reason
    and shows the server log's last lines (and production's, booted for a differential check); a probe note
    shows the model's answers."""
    from pipeline.report import console

    doc = json.loads((FIXTURES / "passed-no-load" / "report.json").read_text())
    reason = "does not load: safetensors._safetensors_rust.SafetensorError: Error while deserializing header"
    for stage in doc["stages"]:
        if stage["name"] == "serve":
            stage.update(status="failed", reasons=[reason, "decided by the server log: in vllm/model_executor/"],
                         details={"log_tail": "Traceback (most recent call last):\nSafetensorError: <b>`x`</b>",
                                  "production_log_tail": "INFO:     Application startup complete.",
                                  "load_failure": {"cause": "unknown", "decided_by": "differential check"}})
        elif stage["name"] != "fetch":
            stage.update(status="skipped", reasons=["not run: stage serve failed"], details={}, metrics={})
    doc.update(verdict="rejected", exit_code=1, reasons=[f"serve: {reason}"])
    (tmp_path / "report.json").write_text(json.dumps(doc))
    data = GateReport.load(tmp_path / "report.json")
    md = markdown.render(data)
    assert "REJECTED" in md.splitlines()[0] and "does not load: safetensors\\." in md
    assert "### serve: last lines of the server log" in md and "```text\nTraceback (most recent" in md
    page = html.render(data)
    assert "serve: last lines of the server log" in page and "&lt;b&gt;`x`&lt;/b&gt;" in page
    out = console.render(data)
    assert "verdict: REJECTED (exit 1)" in out and "--- serve: last lines of the server log ---" in out
    # the production pin booted for a differential check: its log's last lines too, after the candidate's
    production = "serve: last lines of the production server log (differential check)"
    assert md.index("### serve: last lines of the server log") < md.index(f"### {markdown.inline(production)}")
    assert "```text\nINFO:     Application startup complete.\n```" in md and production in page
    assert f"--- {production} ---\n  | INFO:     Application startup complete." in out

    serve = next(s for s in doc["stages"] if s["name"] == "serve")
    serve.update(status="passed", reasons=["answered", "the model answered the chat completion with empty text"],
                 details={"probe": {"prompt": "hi", "max_tokens": 8, "chat_text": "", "finish_reason": "stop",
                                    "stream_text": "", "stream_finish_reason": "stop", "refusals": [],
                                    "notes": ["the model answered the chat completion with empty text"]}})
    (tmp_path / "report.json").write_text(json.dumps(doc))
    md = markdown.render(GateReport.load(tmp_path / "report.json"))
    assert "### serve: smoke probe answers" in md and "chat (stop): ''" in md
    assert "server log" not in md  # a passed stage shows no log


UNLIKE = {"version": "1", "run_id": "0123456789abcdef0123", "status": "skipped",
          "reason": "not comparable: compilation mode differs",
          "differences": ["serving.enforce_eager: False (baseline) != True (candidate)"]}
RANK = {"level": "1x", "threshold_pct": 20, "compared": True, "method": "rank", "confidence": 0.95,
        "e2el": {"estimate_pct": 81.2, "lower_pct": 70.4, "upper_pct": 92.0, "n_candidate": 16, "n_baseline": 16},
        "output_tok_s": {"estimate_pct": -44.8, "lower_pct": -48.0, "upper_pct": -41.3},
        "ttft": {"estimate_pct": 60.0, "lower_pct": 40.0, "upper_pct": 80.0}, "verdict": "fail"}
COMPARED = {"version": "1", "run_id": "0123456789abcdef0123", "status": "compared", "regression_pct": 20,
            "comparisons": [RANK, {"level": "3x", "threshold_pct": 20, "compared": False,
                                   "reason": "production's gate did not run this level"}]}


@pytest.mark.parametrize(("baseline", "expected"), [
    (UNLIKE, ["1x: not compared with production v1 (run 0123456789ab) (not comparable: compilation mode differs)",
              "3x: not compared with production v1 (run 0123456789ab) (not comparable: compilation mode differs)",
              "5x: not compared with production v1 (run 0123456789ab) (not comparable: compilation mode differs)",
              "serving.enforce_eager: False (baseline) != True (candidate)"]),
    (COMPARED, ["1x vs production v1 (run 0123456789ab): e2e latency +81.2% [+70.4%, +92.0%] (regresses above "
                "+20%), per-request output tok/s -44.8% [-48.0%, -41.3%] (below -20%)",
                "3x: not compared with production v1 (run 0123456789ab) (production's gate did not run this level)",
                "5x: not compared with production v1 (run 0123456789ab) (no comparison recorded for this level)"]),
], ids=["not-comparable", "compared"])
def test_every_rendering_says_per_level_what_was_compared_with_which_interval(tmp_path, baseline, expected):
    """The load section, in markdown, HTML and on the console: every level's line, compared or not, names
    production's version and run; a compared level shows its interval next to the threshold."""
    path = fixture(tmp_path, "rejected-load")
    doc = json.loads(path.read_text())
    load = next(s for s in doc["stages"] if s["name"] == "load")
    load["details"]["baseline"] = baseline
    path.write_text(json.dumps(doc))
    data = GateReport.load(path)
    for text in (markdown.render(data), html.render(data, report_path=path), console.render(data)):
        plain = text.replace("\\", "").replace("&#x27;", "'").replace("&gt;", ">").replace("&lt;", "<")
        for line in expected:
            assert line in plain, (line, text[-3000:])
