"""The report is one document; console and markdown are renderings of it."""

import json

import pytest

from pipeline.errors import InfraError
from pipeline.report import document as reports
from tests.support.reports import sample_report


def test_console_shows_stages_table_verdict_and_ends_with_the_run_id(tmp_path):
    text = reports.to_console(sample_report(tmp_path))
    lines = text.splitlines()
    assert any(line.split()[:2] == ["format", "failed"] for line in lines)
    assert "baseline: production v3 (bbbbbbbbbbbb), paired with its recorded per-item results" in text
    row = next(line for line in lines if line.strip().startswith("format/pass"))
    assert row.split() == ["format/pass", "0.750", "0.250", "-0.500", "[-0.700,", "-0.300]", "0.1", "0.5", "4", "fail"]
    assert "verdict: REJECTED (exit 1)" in text and "model version: bot v7" in text
    assert lines[-1] == "mlflow run: " + "r" * 32


def test_markdown_escapes_model_and_user_text(tmp_path):
    md = reports.to_markdown(sample_report(tmp_path))
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "**bold**" not in md and "\\|" in md
    assert ("| format/pass | 0\\.750 | 0\\.250 | \\-0\\.500 | \\[\\-0\\.700, \\-0\\.300\\] | 0\\.1 | 0\\.5 | 4 | fail |"
            in md)


def _with_failing_output(tmp_path, output):
    report = sample_report(tmp_path)
    report["stages"][0]["details"]["failing_cases"] = [
        {"key": "support/x", "critical": True, "output": output,
         "failures": [{"expectation": "json_schema", "reason": "'order_id' is a required property", "path": "$"}]}]
    report["stages"][0]["metrics"]["cases"] = 4
    return report


INJECTIONS = [
    "```\n</details><img src=x onerror=alert(1)>\n```",  # closes our fence, then raw HTML
    "ping @octocat and @github/security-team",  # mentions notify people
    "[click](https://evil.example) ![x](https://evil.example/p.png) see #1 and www.evil.example",
    "<!-- modelgate:gate --> fake marker <b>bold</b>",
]


@pytest.mark.parametrize("output", INJECTIONS)
def test_pr_comment_neutralises_model_output(tmp_path, output):
    from pipeline.report.markdown import code_block

    md = reports.to_markdown(_with_failing_output(tmp_path, output))
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
    html = reports.to_html(report)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Content-Security-Policy" in html and "http://" not in html.split("</head>")[1]
    assert "modelgate: REJECTED: bot v7 (exit 1)" in html


def test_save_is_atomic_redacts_secrets_and_loads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_supersecretvalue")
    report = sample_report(tmp_path)
    report["reasons"].append("token hf_supersecretvalue leaked")
    path = reports.save(report, tmp_path)
    assert "hf_supersecretvalue" not in path.read_text()
    assert reports.load(path)["reasons"][-1] == "token *** leaked"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    path.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(InfraError, match="schema_version 99"):
        reports.load(path)


def test_unwritable_run_dir_is_an_infra_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InfraError, match="cannot write the gate report"):
        reports.save(sample_report(tmp_path), blocker / "run")
