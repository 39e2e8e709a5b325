"""The report is one document; console and markdown are renderings of it."""

import dataclasses
import json
import shutil

import pytest

from pipeline.core.result import Status
from pipeline.core.verdict import Verdict
from pipeline.errors import InfraError
from pipeline.report import console, html, markdown
from pipeline.report.document import GateReport, MalformedReport
from tests.support.paths import REPO
from tests.support.reports import sample_document, sample_report

FIXTURES = REPO / "tests" / "fixtures" / "reports"


def test_console_shows_stages_table_verdict_and_ends_with_the_run_id(tmp_path):
    text = console.render(sample_report(tmp_path))
    lines = text.splitlines()
    assert any(line.split()[:2] == ["format", "failed"] for line in lines)
    assert "baseline: production v3 (bbbbbbbbbbbb), paired with its recorded per-item results" in text
    row = next(line for line in lines if line.strip().startswith("format/pass"))
    # a report written before kind and sensitivity were recorded: both shown as "-"
    assert row.split() == ["format/pass", "-", "0.750", "0.250", "-0.500", "[-0.700,", "-0.300]", "0.1", "-", "0.5",
                           "4", "fail"]
    assert "verdict: REJECTED (exit 1)" in text and "model version: bot v7" in text
    assert lines[-1] == "mlflow run: " + "r" * 32


def test_markdown_escapes_model_and_user_text(tmp_path):
    md = markdown.render(sample_report(tmp_path))
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "**bold**" not in md and "\\|" in md
    assert ("| format/pass | \\- | 0\\.750 | 0\\.250 | \\-0\\.500 | \\[\\-0\\.700, \\-0\\.300\\] | 0\\.1 | "
            "\\- | 0\\.5 | 4 | fail |" in md)


def _with_failing_output(tmp_path, output):
    data = sample_document(tmp_path)
    data["stages"][0]["details"]["failing_cases"] = [
        {"key": "support/x", "critical": True, "output": output,
         "failures": [{"expectation": "json_schema", "reason": "'order_id' is a required property", "path": "$"}]}]
    data["stages"][0]["metrics"]["cases"] = 4
    return GateReport.from_dict(data)


INJECTIONS = [
    "```\n</details><img src=x onerror=alert(1)>\n```",  # closes our fence, then raw HTML
    "ping @octocat and @github/security-team",  # mentions notify people
    "[click](https://evil.example) ![x](https://evil.example/p.png) see #1 and www.evil.example",
    "<!-- modelgate:gate --> fake marker <b>bold</b>",
]


@pytest.mark.parametrize("output", INJECTIONS)
def test_pr_comment_neutralises_model_output(tmp_path, output):
    from pipeline.report.markdown import code_block

    md = markdown.render(_with_failing_output(tmp_path, output))
    assert "### Failing prompt cases (1 of 4)" in md and "**support/x** **critical**" in md
    block = code_block(output)
    assert block in md  # shown verbatim, inside a fence longer than any backtick run in it
    fence = block.split("text", 1)[0]
    assert fence.count("`") > max((len(r) for r in output.split() if set(r) == {"`"}), default=0)
    outside = md.replace(block, "")
    for bad in ("<img", "<b>", "<!--", "](https://", "@octocat", "https://evil"):
        assert bad not in outside


def test_inline_text_cannot_mention_link_or_open_html():
    from pipeline.report.markdown import WJ, inline

    text = inline("@team see https://x.example <b>[a](b)</b> | #12")
    assert "@" + WJ + "team" in text and "https:" + WJ + "//" in text
    assert "<" not in text and "\\[" in text and "\\|" in text and "\\#" in text


def test_html_report_is_self_contained_and_escaped(tmp_path):
    report = _with_failing_output(tmp_path, "<script>alert(1)</script>")
    page = html.render(report)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Content-Security-Policy" in page and "http://" not in page.split("</head>")[1]
    assert "modelgate: REJECTED: bot v7 (exit 1)" in page


@pytest.mark.parametrize("secret", ["ab+cd-ef_gh*ij/kl", 'quo"te\\back', "<tag>&amp;'x'", "naïve-ключ"])
def test_a_secret_that_the_renderers_escape_is_redacted_in_every_file_of_the_report(secret, tmp_path, monkeypatch):
    # markdown escapes + - _ *, HTML & < > ' ", JSON quotes, backslashes and non-ASCII: each spelling of the secret
    # must be gone, so the fields are redacted before any rendering, not only the rendered text
    from pipeline.gate.record import save_report

    monkeypatch.setenv("GITHUB_TOKEN", secret)
    report = sample_report(tmp_path)
    report = dataclasses.replace(report, reasons=(*report.reasons, f"token {secret} leaked"))
    save_report(report, tmp_path)
    spellings = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
                 markdown.inline(secret)}
    import html as std_html
    spellings |= {std_html.escape(secret), std_html.escape(secret, quote=False)}
    written = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir() if p.is_file()}
    assert {"report.json", "report.md", "report.html"} <= set(written)
    for name, text in written.items():
        for spelling in spellings:
            assert spelling not in text, f"{spelling!r} in {name}"
    assert "token *** leaked" in written["report.json"] and markdown.inline("token *** leaked") in written["report.md"]
    assert "token *** leaked" in std_html.unescape(written["report.html"])
    assert secret not in console.render(report.redacted()) and "token *** leaked" in console.render(report.redacted())


def test_save_is_atomic_redacts_secrets_and_loads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_supersecretvalue")
    report = sample_report(tmp_path)
    report = dataclasses.replace(report, reasons=(*report.reasons, "token hf_supersecretvalue leaked"))
    path = report.save(tmp_path)
    assert "hf_supersecretvalue" not in path.read_text()
    assert GateReport.load(path).reasons[-1] == "token *** leaked"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    path.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(InfraError, match="schema_version 99"):
        GateReport.load(path)


def test_unwritable_run_dir_is_an_infra_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InfraError, match="cannot write the gate report"):
        sample_report(tmp_path).save(blocker / "run")


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_reports_written_by_earlier_gates_load_and_save_back_the_same(tmp_path, name):
    original = FIXTURES / name / "report.json"
    report = GateReport.load(original)
    assert report.verdict in set(Verdict) and all(isinstance(s.status, Status) for s in report.stages)
    saved = report.save(tmp_path)
    assert json.loads(saved.read_text()) == json.loads(original.read_text())
    assert saved.read_text() == original.read_text()  # byte for byte: same keys, same order
    assert GateReport.load(saved) == report


def test_a_report_without_its_fields_or_with_an_unknown_verdict_is_malformed(tmp_path):
    data = sample_document(tmp_path)
    with pytest.raises(MalformedReport, match="gate_id missing") as info:
        GateReport.from_dict({k: v for k, v in data.items() if k != "gate_id"})
    assert info.value.field == "gate_id"
    with pytest.raises(MalformedReport, match="verdict"):
        GateReport.from_dict({**data, "verdict": "failed"})
    with pytest.raises(MalformedReport, match="stages"):
        GateReport.from_dict({**data, "stages": [{"name": "x", "status": "bogus"}]})
    with pytest.raises(MalformedReport):
        GateReport.from_dict([1, 2])


def test_recording_updates_only_the_tracking_part(tmp_path):
    shutil.copytree(FIXTURES / "passed-no-load", tmp_path / "run")
    report = GateReport.load(tmp_path / "run" / "report.json").with_tracking(error="down", model_version=None)
    again = GateReport.load(report.save(tmp_path / "run"))
    assert again.tracking.error == "down" and again.tracking.model_version is None
    assert "model_version" not in json.loads((tmp_path / "run" / "report.json").read_text())["tracking"]
    assert dataclasses.replace(again, tracking=report.tracking) == report


def _with_sensitivity(tmp_path):
    data = sample_document(tmp_path)
    row = data["stages"][1]["details"]["metrics"][0]
    row.update(kind="binary", mde=0.412, power=0.8, underpowered=True, discordance=0.5, sd_diff=None, items_needed=61,
               alpha=0.05, verdict="inconclusive")
    data["stages"][1]["details"]["metrics"].append(dict(row, name="t/acc", verdict="fail"))  # rejected: not missed
    data["stages"][1]["details"]["metrics"].append(
        {"name": "t/f1", "kind": "continuous", "baseline_mean": 0.6, "candidate_mean": 0.61, "delta": 0.01,
         "lower": -0.02, "upper": 0.04, "margin": 0.1, "floor": None, "n": 120, "verdict": "pass", "mde": 0.046,
         "power": 0.8, "underpowered": False, "discordance": None, "sd_diff": 0.2, "items_needed": 26, "alpha": 0.05})
    return GateReport.from_dict(data)


UNDERPOWERED = ("format/pass: UNDERPOWERED: margin 0.1 is below the smallest drop this gate detects with 80% power "
                "(0.412 at n=4, alpha 0.05, discordance 0.5): the gate could have missed drops up to 0.412; about 61 "
                "paired items would resolve it")


def test_every_rendering_shows_the_mde_next_to_the_margin_and_the_underpowered_warning(tmp_path):
    report = _with_sensitivity(tmp_path)
    text = console.render(report)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip().startswith(("format/", "t/"))}
    assert rows["format/pass"][1] == "binary" and rows["format/pass"][7:10] == ["0.1", "0.412", "underpowered"]
    assert rows["t/f1"][1] == "continuous" and rows["t/f1"][7:9] == ["0.1", "0.046"]
    assert UNDERPOWERED in text and "t/f1: UNDERPOWERED" not in text and "t/acc: UNDERPOWERED" not in text
    assert rows["t/acc"][7:9] == ["0.1", "0.412"] and rows["t/acc"][-1] == "fail"
    md = markdown.render(report)
    assert "| 0\\.1 | 0\\.412 underpowered | 0\\.5 | 4 | inconclusive |" in md
    assert markdown.inline(UNDERPOWERED) in md and "MDE 80%" in md
    page = html.render(report)
    assert "<td>0.412 underpowered</td>" in page and UNDERPOWERED in page
    assert '<td class="inconclusive">inconclusive</td>' in page and '<td class="pass">pass</td>' in page
    # the typed report keeps the new fields through a save and load
    saved = GateReport.load(report.save(tmp_path / "again"))
    assert saved.stage("compare").details["metrics"][0]["underpowered"] is True
