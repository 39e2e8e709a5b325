"""After promotion, on a real Prometheus (Debian's binary, 1 s scrapes on 127.0.0.1) scraping a vLLM-format
exporter whose traffic the test drives: the previous version serves, then the promoted one healthy, then degraded
(3x the latencies, half the requests finished by length). `modelgate watch`'s judgement and the alerting rules'
queries are evaluated by Prometheus itself; the rules pass `promtool check rules`."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
import yaml

from pipeline.config.release import load_release
from pipeline.errors import EXIT_INFRA, InfraError
from pipeline.serving.vllm_server import free_port
from pipeline.watch import alerts, judge
from pipeline.watch.prom import Prometheus
from pipeline.watch.run import Production, judge_windows, should_roll_back
from tests.support.cli import run_in_process
from tests.support.prometheus import binary
from tests.support.releases import write_release

W = 6  # seconds per window
PREVIOUS, CURRENT = "chat@aaaaaaaaaaaa", "chat@bbbbbbbbbbbb"
SLO = {"p95_e2el_ms": 3000, "p95_ttft_ms": 800}


def _release(tmp_path, **promotion):
    return load_release(write_release(tmp_path, gates={"load": {"slo": SLO, "regression_pct": 20}},
                                      watch={"window_s": W, "min_requests": 20, "alert_for_s": 0},
                                      promotion={"release_managers": ["alice", "modelgate-watch"], **promotion}))


def _alert_values(prom: Prometheus, release, at: float) -> dict[str, float | None]:
    return {lim.alert: prom.value(lim.query, at) for lim in alerts.limits(release, CURRENT)}


@pytest.fixture(scope="module")
def scenario(prometheus, tmp_path_factory):
    """The timeline, run once: W+4 s of the previous version, the promotion, W+2 s healthy, W s degraded; each
    phase judged at its end (consecutive_windows 2 with auto_rollback on)."""
    server, exporter = prometheus
    release = _release(tmp_path_factory.mktemp("watch"), auto_rollback={"enabled": True, "consecutive_windows": 2})
    prom = Prometheus(server.url)
    exporter.set(PREVIOUS, 20)
    time.sleep(W + 4)  # its series appears at the first scrape: a whole window of traffic after it
    promoted_at = time.time()
    exporter.set(PREVIOUS, 0)
    exporter.set(CURRENT, 20)
    prod = Production(release.model_name, "2", CURRENT, promoted_at, None, "1", PREVIOUS)
    time.sleep(W + 2)
    t1 = time.time()
    healthy = judge_windows(release, prom, prod, t1, 1, progress=lambda _: None)
    alerts_healthy = _alert_values(prom, release, t1)
    exporter.set(CURRENT, 20, latency=3, length=0.5)
    time.sleep(W)  # the newest window is degraded, the one before it is not
    t2 = time.time()
    lines: list[str] = []
    degraded = judge_windows(release, prom, prod, t2, 2, progress=lines.append)
    exporter.set(CURRENT, 0)
    return {"release": release, "prom": prom, "healthy": healthy, "degraded": degraded, "lines": lines,
            "alerts_healthy": alerts_healthy, "alerts_degraded": _alert_values(prom, release, t2), "prod": prod,
            "t2": t2}


def _signals(result):
    return {s.name: s for s in result.judgements[0].signals}


def test_a_healthy_window_is_healthy_against_the_slos_and_the_previous_versions_window(scenario):
    result = scenario["healthy"]
    assert result.status == judge.HEALTHY, judge.lines(result.judgements[0])
    sig = _signals(result)
    assert 15 <= sig["request_rate"].value <= 25
    assert sig["p95_e2el_ms"].status == judge.HEALTHY and sig["p95_e2el_ms"].value < SLO["p95_e2el_ms"]
    assert result.judgements[0].compared == f"vs {PREVIOUS} before the promotion", judge.lines(result.judgements[0])
    assert "vs previous" in " ".join(sig["p95_e2el_ms"].evidence)
    assert result.judgements[0].compared == f"vs {PREVIOUS} before the promotion"
    assert sig["length_share"].status == judge.HEALTHY and 0.05 <= sig["length_share"].value <= 0.15
    assert sig["output_tokens_per_request"].value == pytest.approx(64, rel=0.05)


def test_a_degraded_window_names_each_signal_with_its_value_threshold_and_interval(scenario):
    result = scenario["degraded"]
    newest = result.judgements[0]
    assert newest.status == judge.DEGRADED
    sig = _signals(result)
    assert {s.name for s in newest.degraded()} >= {"p95_e2el_ms", "p95_ttft_ms", "length_share"}
    assert sig["p95_e2el_ms"].value > SLO["p95_e2el_ms"]
    e2el = " ".join(sig["p95_e2el_ms"].evidence)
    assert "SLO 3000 ms: above" in e2el and "regressed" in e2el and "regresses above +20%" in e2el
    assert "histogram_quantile(0.95" in sig["p95_e2el_ms"].query and CURRENT in sig["p95_e2el_ms"].query
    assert sig["failed_share"].status == judge.HEALTHY
    assert any("DEGRADED" in line for line in scenario["lines"])


def test_one_degraded_window_after_a_healthy_one_is_not_enough_to_roll_back(scenario):
    result = scenario["degraded"]
    assert [j.status for j in result.judgements] == [judge.DEGRADED, judge.HEALTHY]
    assert should_roll_back(scenario["release"], result) is False
    two = type(result)(judge.DEGRADED, result.production, [result.judgements[0], result.judgements[0]])
    assert should_roll_back(scenario["release"], two) is True


def test_no_traffic_is_no_data_never_degraded(scenario):
    prod = Production("m", "2", "chat@cccccccccccc", scenario["prod"].promoted_at - 3 * W, None, "1", PREVIOUS)
    result = judge_windows(scenario["release"], scenario["prom"], prod, time.time(), 2, progress=lambda _: None)
    assert [j.status for j in result.judgements] == [judge.NO_DATA, judge.NO_DATA]
    assert should_roll_back(scenario["release"], result) is False
    too_soon = Production("m", "2", CURRENT, time.time() - 1, None)
    early = judge_windows(scenario["release"], scenario["prom"], too_soon, time.time(), 1, progress=lambda _: None)
    assert early.status == judge.NO_DATA and "less than one window" in early.notes[0]


def test_an_unreachable_prometheus_is_an_infrastructure_error(tmp_path):
    with pytest.raises(InfraError, match=r"Prometheus at http://127\.0\.0\.1:\d+ did not answer") as caught:
        Prometheus(f"http://user:secret@127.0.0.1:{free_port()}", timeout_s=2).value("up", time.time())
    assert caught.value.exit_code == EXIT_INFRA and "secret" not in str(caught.value)


def test_the_alert_queries_evaluate_on_real_prometheus_within_then_above_the_limits(scenario):
    healthy, degraded = scenario["alerts_healthy"], scenario["alerts_degraded"]
    assert set(healthy) == {"ModelgateP95E2eLatencyAboveSlo", "ModelgateP95TimeToFirstTokenAboveSlo",
                            "ModelgateFailedShareAboveSlo"}
    assert healthy["ModelgateP95E2eLatencyAboveSlo"] < 3000 < degraded["ModelgateP95E2eLatencyAboveSlo"]
    assert healthy["ModelgateP95TimeToFirstTokenAboveSlo"] < 800 < degraded["ModelgateP95TimeToFirstTokenAboveSlo"]
    assert healthy["ModelgateFailedShareAboveSlo"] == 0 == degraded["ModelgateFailedShareAboveSlo"]
    # the rules' own expressions: nothing in the healthy phase, the latency alerts in the degraded one
    rules = alerts.rules(scenario["release"], CURRENT)["groups"][0]["rules"]
    prom, t2 = scenario["prom"], scenario["t2"]
    firing = {r["alert"] for r in rules if prom.query(r["expr"], t2)}
    assert firing == {"ModelgateP95E2eLatencyAboveSlo", "ModelgateP95TimeToFirstTokenAboveSlo"}


def test_generated_rules_pass_promtool_and_the_argo_template_asks_the_same_queries(tmp_path):
    config = write_release(tmp_path, gates={"load": {"slo": {**SLO, "p95_tpot_ms": 100}}},
                           watch={"window_s": 300, "max_queue": 8})
    out = tmp_path / "rules.yml"
    done = run_in_process("alerts", "--config", str(config), "--served-name", CURRENT, "--output", str(out))
    assert done.returncode == 0, done.stderr
    check = subprocess.run([binary("promtool"), "check", "rules", str(out)], capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS: 5 rules found" in check.stdout, check.stdout + check.stderr
    rules = yaml.safe_load(out.read_text())["groups"][0]["rules"]
    argo = run_in_process("alerts", "--config", str(config), "--served-name", CURRENT, "--format", "argo")
    template = yaml.safe_load(argo.stdout)
    assert template["kind"] == "AnalysisTemplate"
    queries = [m["provider"]["prometheus"]["query"] for m in template["spec"]["metrics"]]
    assert [f"({q}) > " for q in queries] == [r["expr"].rsplit(") > ", 1)[0] + ") > " for r in rules]
    assert all(m["successCondition"].startswith("isNaN(result[0]) || result[0] <= ")
               for m in template["spec"]["metrics"])
    bad = run_in_process("alerts", "--config", str(config), "--served-name", 'x"} or vector(1) #')
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--served-name" in bad.stderr


def test_a_prometheus_answer_reaches_watch_through_the_http_api(prometheus):
    server, _ = prometheus
    assert httpx.get(f"{server.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"][0]["health"] in (
        "up", "unknown")
