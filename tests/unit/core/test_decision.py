"""One Decision word for every judge (core/decision.py), folded into a stage status in one place."""

from __future__ import annotations

import json

import pytest

from pipeline.checks import shift, slo, stats
from pipeline.core.decision import Decision, deciding_first, fold
from pipeline.core.result import Status


@pytest.mark.parametrize("decisions, status", [
    (["pass", "pass"], Status.PASSED), ([], Status.PASSED), (["pass", "inconclusive"], Status.INCONCLUSIVE),
    (["inconclusive", "fail", "pass"], Status.FAILED), ([Decision.FAIL], Status.FAILED)])
def test_fold_fails_on_any_fail_else_inconclusive_on_any_inconclusive(decisions, status):
    assert fold(decisions) is status


def test_a_word_that_is_not_a_decision_is_refused_not_read_as_a_pass():
    with pytest.raises(ValueError):
        fold(["pass", "regressed"])


def test_deciding_ones_sort_first():
    assert sorted(["pass", "inconclusive", "fail"], key=deciding_first) == ["fail", "inconclusive", "pass"]


def test_the_metric_and_the_load_judges_decide_in_the_same_words_and_report_json_holds_strings():
    metric = stats.compare_metric("t/acc", [1] * 40, [1] * 40, 0.1, None, "binary")
    assert metric.verdict is Decision.PASS
    slow = {"level": "1x", "concurrency": 1, "samples": {"e2el_ms": [300.0 + i for i in range(16)],
                                                          "ttft_ms": [30.0] * 16, "output_tokens": [16] * 16}}
    fast = {**slow, "samples": {**slow["samples"], "e2el_ms": [100.0 + i for i in range(16)]}}
    rec, failures = slo.compare_level(slow, fast, 20)
    assert rec["verdict"] is Decision.FAIL and failures
    assert json.loads(json.dumps({"m": metric.to_dict()["verdict"], "l": rec["verdict"]})) == {"m": "pass", "l": "fail"}
    assert slo.comparison_line(rec).endswith(": regressed")  # the load comparison's own word for a fail
    assert shift.critical_u(16, 16, 0.05) <= 16 * 16  # enough requests for the rank bound used above
