"""watch's pure parts: the rank comparison over histogram buckets, the judgement's rules, release.yaml's
watch and auto_rollback sections."""

from __future__ import annotations

import pytest

from pipeline.checks.binned import binned_log_shift, bucket_values, per_bucket
from pipeline.config.release import load_release
from pipeline.errors import EXIT_BAD_INPUT, ConfigError
from pipeline.watch import judge
from tests.support.releases import write_release

BOUNDS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0]


def test_the_bucket_comparison_regresses_only_beyond_the_threshold_with_confidence():
    values = bucket_values(BOUNDS)
    same = [0, 10, 20, 30, 20, 10, 5, 5, 0, 0]
    a_a = binned_log_shift(same, same, values)
    assert a_a["estimate_pct"] == 0 and a_a["lower_pct"] <= 0 <= a_a["upper_pct"]
    slower = [0, 0, 0, 0, 5, 10, 20, 40, 25, 0]  # about 3x
    worse = binned_log_shift(slower, same, values)
    assert worse["lower_pct"] > 20
    few = binned_log_shift([0, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0, 0, 0], values)
    assert few["lower_pct"] is None and few["upper_pct"] is None  # too few requests for a bound
    assert per_bucket([0.0, 2.2, 2.2, 5.0]) == [0, 2, 0, 3]


def _window(requests, **values):
    """A window in which `requests` arrived (and as many finished, unless `finished` says otherwise)."""
    return {"served_name": "chat@b", "start": "s", "end": "e", "requests": requests, "finished": requests,
            "queries": {}, "buckets": {}, **values}


def test_too_few_requests_is_no_data_even_with_every_signal_above_its_limit(tmp_path):
    release = load_release(write_release(tmp_path, gates={"load": {"slo": {"p95_e2el_ms": 100}}},
                                         watch={"min_requests": 20}))
    quiet = judge.judge(_window(5, p95_e2el_ms=9000.0, failed_share=1.0, request_rate=0.1), None, release)
    assert quiet.status == judge.NO_DATA
    busy = judge.judge(_window(50, p95_e2el_ms=9000.0, failed_share=0.0, request_rate=1.0), None, release)
    assert busy.status == judge.DEGRADED and [s.name for s in busy.degraded()] == ["p95_e2el_ms"]
    assert "not compared with the previous version: no previous version" in busy.compared


def test_the_previous_window_is_compared_only_at_a_comparable_request_rate(tmp_path):
    release = load_release(write_release(tmp_path, watch={"rate_tolerance": 0.5, "min_requests": 20}))
    now = _window(100, request_rate=10.0, length_share=0.6)
    assert "arrival rates not comparable: 10 req/s now vs 2 req/s" in judge.comparable(
        now, _window(100, request_rate=2.0, length_share=0.1, served_name="chat@a"), release)
    j = judge.judge(now, _window(100, request_rate=8.0, length_share=0.1, served_name="chat@a"), release)
    assert j.status == judge.DEGRADED and [s.name for s in j.degraded()] == ["length_share"]


def test_auto_rollback_needs_modelgate_watch_among_the_release_managers(tmp_path):
    path = write_release(tmp_path, promotion={"release_managers": ["alice"], "auto_rollback": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"release\.yaml: promotion\.auto_rollback\.enabled: auto_rollback rolls "
                                          r"back as 'modelgate-watch'") as caught:
        load_release(path)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    ok = load_release(write_release(tmp_path, promotion={"release_managers": ["alice", "modelgate-watch"],
                                                         "auto_rollback": {"enabled": True}}))
    assert ok.promotion.auto_rollback.consecutive_windows == 3
    assert load_release(write_release(tmp_path)).promotion.auto_rollback.enabled is False  # off by default


def test_a_version_that_cannot_keep_up_is_judged_at_the_traffic_it_was_offered(tmp_path):
    """Counted at arrival: 60 requests arrived in each window; the new version finished 25 and piled up 35. Its
    window is compared with the previous one (the same arrival rate, not its lower finish rate) and is degraded
    on the unfinished share, against the SLO and against the previous version."""
    release = load_release(write_release(tmp_path, watch={"min_requests": 20}))
    before = _window(60, finished=60, request_rate=1.0, unfinished_share=0.0, served_name="chat@a")
    after = _window(60, finished=25, request_rate=1.0, unfinished_share=35 / 60)
    assert judge.comparable(after, before, release) is None
    j = judge.judge(after, before, release)
    assert j.status == judge.DEGRADED and [s.name for s in j.degraded()] == ["unfinished_share"]
    (sig,) = j.degraded()
    assert sig.evidence[0].startswith("SLO 0.25: at least 0.4") and sig.evidence[0].endswith("of 60 requests: above")
    assert "vs previous 0.000: +0.583" in sig.evidence[1] and sig.evidence[1].endswith("regressed")
    assert judge.lines(j)[0].startswith("window s .. e (chat@b, 60 requests arrived, 25 finished): DEGRADED")


def test_a_stuck_version_that_finishes_nothing_is_degraded_not_no_data(tmp_path):
    release = load_release(write_release(tmp_path, watch={"min_requests": 20}))
    stuck = judge.judge(_window(30, finished=0, request_rate=0.5, unfinished_share=1.0), None, release)
    assert stuck.status == judge.DEGRADED and [s.name for s in stuck.degraded()] == ["unfinished_share"]


def test_a_backlog_within_the_noise_of_few_arrivals_is_not_degraded(tmp_path):
    """6 of 25 arrivals still in the system at the window's end: 0.24, and its lower bound well under the SLO's
    0.25; a draining window (fewer in the system at its end) is negative and healthy."""
    release = load_release(write_release(tmp_path, watch={"min_requests": 20, "max_unfinished_share": 0.2}))
    few = judge.judge(_window(25, finished=19, request_rate=0.4, unfinished_share=0.24), None, release)
    assert few.status == judge.HEALTHY, judge.lines(few)
    draining = judge.judge(_window(25, finished=30, request_rate=0.4, unfinished_share=-0.2), None, release)
    assert draining.status == judge.HEALTHY, judge.lines(draining)
