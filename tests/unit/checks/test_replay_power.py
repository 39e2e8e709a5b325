"""Every replay check states its power (checks/replay_power.py): production's own passes, the smallest drop the
compare table's computation detects, the exact chance of seeing a total break; a check production fails on most
requests is flagged in every rendering of the report and in MLflow's tag, never shown as a plain pass."""

from __future__ import annotations

import pytest

from pipeline.checks import power as pw
from pipeline.checks.replay_power import CheckPower, check_power
from pipeline.checks.stats import absolute_only, compare_metric
from pipeline.gate.stages import replay
from pipeline.report import console, html, markdown, views
from pipeline.report.document import GateReport
from tests.support.reports import sample_document


def judged(check: str, production: list[float], candidate: list[float]):
    comparison = compare_metric(f"replay/{check}", candidate, production, 0.2, None, "binary")
    return comparison, check_power(check, comparison, production)


def test_a_check_production_never_passes_has_no_power():
    comparison, power = judged("tool_call", [0.0] * 31, [0.0] * 31)
    assert comparison.verdict == "pass"  # the statistics alone call it a pass: identical, both failing
    assert (power.n, power.production_passes, power.break_power) == (31, 0, 0.0)
    assert power.flag == "no power" and power.label() == "no power: production passes 0 of 31"
    assert power.mde == comparison.mde  # the compare table's MDE, not a second computation
    note = power.note() or ""
    assert note.startswith("replay/tool_call: no power: production passes 0 of 31: a candidate that fails every "
                           "request production passes would be detected with 0% power")


@pytest.mark.parametrize("passes, flag", [(3, "no power"), (12, "low power"), (29, None)])
def test_the_flag_follows_the_exact_power_to_see_a_total_break(passes, flag):
    production = [1.0] * passes + [0.0] * (31 - passes)
    _, power = judged("json_schema", production, production)
    assert power.break_power == pytest.approx(pw.binary_power(31, passes / 31, passes / 31))
    assert power.flag == flag and (power.note() is None) == (flag is None)


def test_without_production_answers_no_power_is_claimed():
    power = check_power("stop", absolute_only("replay/stop", [1.0, 0.0], None), None)
    assert power.production_passes is None and power.flag is None and power.production_line() == "-"


def test_the_stored_power_loads_back_the_same():
    _, power = judged("tool_call", [0.0] * 31, [0.0] * 31)
    assert CheckPower.from_dict("tool_call", power.to_dict()) == power


def report_with_replay(tmp_path):
    """The sample report with a replay stage of two checks: stop (production passes all) and tool_call (none)."""
    table, per_check = replay.tables([judged("stop", [1.0] * 18, [1.0] * 18),
                                      judged("tool_call", [0.0] * 31, [0.0] * 31)])
    doc = sample_document(tmp_path)
    doc["stages"].append({"name": "replay", "status": "passed", "duration_s": 3.0, "metrics": {}, "reasons": [],
                          "artifacts": {}, "details": {
                              "sampled": 100, "recorded": 288, "production": {
                                  "version": "3", "served_name": "chat@b", "recorded": 0, "asked": 100},
                              "per_check": per_check, "metrics": table, "requests": []}})
    return GateReport.from_dict(doc)


def test_every_rendering_flags_a_check_production_fails_and_none_shows_it_as_a_plain_pass(tmp_path):
    report = report_with_replay(tmp_path)
    rows = {r[0]: r for r in views.replay_rows(report)}
    assert rows["tool_call"][2] == "0 of 31 (0.0%)" and rows["tool_call"][-1] == "pass, no power"
    assert rows["stop"][2] == "18 of 18 (100.0%)" and rows["stop"][-1] == "pass"
    assert rows["tool_call"][4] == f"{report.stage('replay').details['per_check']['tool_call']['mde']:.3f}"
    compared = {r[0]: r for r in views.comparison_rows(report)}
    assert compared["replay/tool_call"][-1] == "pass, no power" and compared["replay/stop"][-1] == "pass"
    flag = "no power: production passes 0 of 31"
    md = markdown.render(report)
    assert f"- **replay/tool\\_call: {markdown.inline(flag)}" in md and "| pass, no power |" in md
    page = html.render(report)
    assert f"<li>replay/tool_call: {flag}" in page and ">pass, no power</td>" in page
    assert f"replay/tool_call: {flag}" in console.render(report)
    assert views.replay_power_notes(report) == [n for n in [p.note() for p in views.replay_powers(report)] if n]


def test_a_report_from_before_the_power_was_stated_renders_as_before(tmp_path):
    doc = sample_document(tmp_path)
    doc["stages"].append({"name": "replay", "status": "passed", "duration_s": 1.0, "metrics": {}, "reasons": [],
                          "artifacts": {}, "details": {"sampled": 4, "recorded": 4, "production": None, "per_check": {
                              "non_empty": {"candidate": 1.0, "production": None, "n": 4, "verdict": "pass"}}}})
    report = GateReport.from_dict(doc)
    assert views.replay_rows(report) == [["non_empty", "4", "-", "100.0%", "-", "pass"]]
    assert views.replay_power_notes(report) == []
