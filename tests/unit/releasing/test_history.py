"""The history timeline's text rendering and which gate metrics it shows."""

from pipeline.releasing.history import _key_metrics, to_text


def test_key_metrics_keep_what_a_release_manager_scans():
    metrics = {"format.pass_rate": 0.7, "format.pass_rate.support": 1.0, "evals.support_intent.acc": 0.5,
               "evals.items": 240, "evals.items_per_s": 1.3, "evals.duration_s": 4.0, "load.5x.p95_e2el_ms": 3393.1,
               "load.5x.server.kv_cache_usage_max": 0.03, "load.cost_per_1m_output_tokens": 0.143, "fetch.bytes": 9}
    assert _key_metrics(metrics) == {"format.pass_rate": 0.7, "evals.support_intent.acc": 0.5,
                                     "load.5x.p95_e2el_ms": 3393.1, "load.cost_per_1m_output_tokens": 0.143}


def test_timeline_text_shows_incomplete_operations_and_each_event():
    doc = {"model": "bot", "aliases": {"production": "2", "previous": "1", "candidate": "3"},
           "in_progress": ["promote of bot v3 by alice is in progress"],
           "events": [
               {"at": "2026-11-22T09:00:00+00:00", "event": "gate", "version": "3", "revision": "ab" * 20,
                "verdict": "passed", "actor": "dev@example.com", "pr": "12", "metrics": {"format.pass_rate": 0.75}},
               {"at": "2026-11-22T09:05:00+00:00", "event": "promote", "version": "3", "actor": "alice",
                "from_version": "2", "state": "in-progress", "reason": ""},
           ]}
    lines = to_text(doc).splitlines()
    assert lines[0] == "bot: production v2, previous v1, candidate v3"
    assert lines[1] == "  ! incomplete: promote of bot v3 by alice is in progress"
    assert "gate      v3    abababababab passed       by dev@example.com  PR #12  [pass_rate=0.75]" in lines[2]
    assert lines[3].endswith("promote   v3 from v2 by alice (in-progress)")
