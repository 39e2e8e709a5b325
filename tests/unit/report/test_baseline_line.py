"""The report's baseline line says what the comparison was made against: the recorded items, the baseline
re-evaluated for every metric, or re-evaluated only for the metrics a changed digest covers."""

from __future__ import annotations

from pipeline.report.document import GateReport
from pipeline.report.views import baseline_line
from tests.support.reports import sample_document


def line(tmp_path, **baseline) -> str | None:
    doc = sample_document(tmp_path)
    compare = doc["stages"][1]["details"]
    compare["metrics"].append({**compare["metrics"][0], "name": "intent/acc"})
    compare["baseline"] = {**compare["baseline"], **baseline}
    return baseline_line(GateReport.from_dict(doc))


def test_the_baseline_line_names_what_was_measured_again(tmp_path):
    head = f"baseline: production v3 ({'b' * 12}), "
    assert line(tmp_path) == head + "paired with its recorded per-item results"
    partly = line(tmp_path, reevaluated=True, changed=["evalsets"], reevaluated_metrics=["intent/acc"])
    assert partly == head + ("re-evaluated in this gate for intent/acc (evalsets changed), the other metrics paired "
                             "with its recorded per-item results")
    every = line(tmp_path, reevaluated=True, changed=["evalsets", "suites"],
                 reevaluated_metrics=["format/pass", "intent/acc"])
    assert every == head + "re-evaluated in this gate (evalsets, suites changed)"
    # a report written before only the stale metrics were re-evaluated: all of them were
    older = line(tmp_path, reevaluated=True, changed=["evalsets"])
    assert older == head + "re-evaluated in this gate (evalsets changed)"
