"""What the auditor reads in MLflow: the version's decision line, the model's description, the lines approvals,
promotions and rollbacks add, and the per-item traces (built from the run directory, logged once)."""

from __future__ import annotations

import dataclasses

from pipeline.integrations import traces
from pipeline.integrations.registry import model_description
from pipeline.releasing.audit import APPROVE, PROMOTE, ROLLBACK, AuditEvent, describe_lines, production_line
from pipeline.report.views import decision_line
from tests.support.reports import report_with_items, sample_document, sample_report


def test_decision_line_leads_with_the_verdict_and_the_deltas_that_decided_it(tmp_path):
    report = dataclasses.replace(sample_report(tmp_path), baseline_version="3")
    assert decision_line(report) == "REJECTED · format/pass 25.0% vs 75.0% (production v3)"


def test_decision_line_without_a_comparison_gives_the_reasons(tmp_path):
    doc = sample_document(tmp_path)
    doc["stages"] = doc["stages"][:1]
    doc["reasons"] = ["critical case(s) failed:\n support/a"]
    report = sample_report(tmp_path).from_dict(doc)
    assert decision_line(report) == "REJECTED · critical case(s) failed: support/a"


def test_model_description_keeps_what_the_model_is_and_replaces_the_production_line():
    first = model_description(None, about="A support bot")
    assert first == "A support bot"
    promoted = model_description(first, production="v1 since 2026-12-01 (promote by alice)")
    assert promoted == "A support bot\n\nProduction: v1 since 2026-12-01 (promote by alice)"
    again = model_description(promoted, production="v2 since 2026-12-02 (promote by bob)")
    assert again == "A support bot\n\nProduction: v2 since 2026-12-02 (promote by bob)"
    assert model_description(again, about="A better bot").endswith("Production: v2 since 2026-12-02 (promote by bob)")
    assert model_description(None) == "gated by modelgate"


def _event(event: str, **tags: str) -> AuditEvent:
    return AuditEvent(run_id="r", event=event, model_name="bot", version="4", actor="bob", at="2026-12-01T03:00:00",
                      start_ms=0, reason=tags.pop("reason", ""), from_version=tags.pop("from_version", ""),
                      tags={f"modelgate.{k}": v for k, v in tags.items()})


def test_each_release_event_adds_who_when_and_why_to_the_versions_it_touched():
    assert describe_lines(_event(APPROVE, reason="looked at the\nfailing cases")) == [
        ("4", "2026-12-01T03:00:00 APPROVED by bob: looked at the failing cases")]
    promote = _event(PROMOTE, from_version="3", approvers="alice", finished_at="2026-12-01T03:05:00")
    assert describe_lines(promote) == [
        ("4", "2026-12-01T03:05:00 PROMOTED to production by bob (replacing v3); approved by alice")]
    assert production_line(promote) == "v4 since 2026-12-01T03:05:00 (promote by bob; approved by alice)"
    rollback = _event(ROLLBACK, from_version="5", reason="latency regression")
    assert describe_lines(rollback) == [
        ("4", "2026-12-01T03:00:00 ROLLED BACK TO: production again, by bob (replacing v5): latency regression"),
        ("5", "2026-12-01T03:00:00 ROLLED BACK: production moved back to v4 by bob: latency regression")]


def test_item_traces_carry_each_expectations_verdict_and_each_items_scores(tmp_path):
    found = {t.name: t for t in traces.item_traces(report_with_items(tmp_path), tmp_path)}
    assert set(found) == {"support/a", "support/b", "intent/intent-000", "intent/h2"}
    a, b = found["support/a"], found["support/b"]
    assert a.feedback == (("passed", True, "every expectation met"), ("json_schema", True, "met"),
                          ("regex", True, "met"))
    assert b.feedback == (("passed", False, "missing 'age' (at $)"), ("max_chars", True, "met"),
                          ("json_schema", False, "missing 'age' (at $)"))
    assert b.inputs == {"case": "support/b"} and b.duration_ms == 1250
    assert b.attributes["finish_reason"] == "length" and b.attributes["served_name"] == "chat@abc"
    item = found["intent/intent-000"]
    assert item.inputs == {"task": "intent", "item": "intent-000", "doc_hash": "h1"}
    assert item.feedback == (("acc", 1.0, None),)
    assert found["intent/h2"].feedback == (("acc", 0.0, None),)  # no items.jsonl row: named by its hash
