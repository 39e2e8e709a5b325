"""After promotion, on a real Prometheus (Debian's binary, 1 s scrapes on 127.0.0.1) scraping a vLLM-format
exporter whose traffic the test drives: the previous version serves, then the promoted one healthy, then degraded
(3x the latencies, half the requests finished by length). `modelgate watch`'s judgement and the alerting rules'
queries are evaluated by Prometheus itself; the rules pass `promtool check rules`.

Beside it, on the same timeline, a team's real release (tests/support/team.py: signed gates, approvals, promotions
sealed with the audit key, on the session's MLflow server): v1 promoted, then v2 promoted at the timeline's
promotion, their served names (`chat@<rev12>`) driven like the stand-ins. `modelgate watch` finds production from
the alias and the sealed trail, records each judgement on the promotion's audit run, and, with auto_rollback after
2 degraded windows, rolls back to v1 as `modelgate-watch`."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.config.release import load_release
from pipeline.errors import EXIT_INFRA, InfraError
from pipeline.serving.vllm_server import free_port
from pipeline.watch import alerts, judge
from pipeline.watch.prom import Prometheus
from pipeline.watch.run import Production, judge_windows, should_roll_back, watch
from tests.support.cli import run_in_process
from tests.support.ghfake.fixtures import FAKE_REPO
from tests.support.git import git
from tests.support.prometheus import binary
from tests.support.releases import write_release
from tests.support.team import alias, approve, make_team, model_of, modelgate, promote, record_gate, released, revision

pytestmark = pytest.mark.integration
W = 6  # seconds per window
PREVIOUS, CURRENT = "chat@aaaaaaaaaaaa", "chat@bbbbbbbbbbbb"
SLO = {"p95_e2el_ms": 3000, "p95_ttft_ms": 800}


def _release(tmp_path, **promotion):
    return load_release(write_release(tmp_path, gates={"load": {"slo": SLO, "regression_pct": 20}},
                                      watch={"window_s": W, "min_requests": 20, "alert_for_s": 0},
                                      promotion={"release_managers": ["alice", "modelgate-watch"], **promotion}))


def _alert_values(prom: Prometheus, release, at: float) -> dict[str, float | None]:
    return {lim.alert: prom.value(lim.query, at) for lim in alerts.limits(release, CURRENT)}


TEAM_V1, TEAM_V2 = f"chat@{revision(1)[:12]}", f"chat@{revision(2)[:12]}"


def _team(root, uri, github):
    """A team (real git, signed gates, sealed audit, GitHub deployments to the fake GitHub `github`) with watch and
    auto_rollback after 2 degraded windows in its release.yaml, `modelgate-watch` among its release managers; v1
    released, v2 gated and approved."""
    config = make_team(root, "it-watch-real-promotion", github={"repository": FAKE_REPO, "api_url": github.url,
                                                                "environment": "production"})
    data = yaml.safe_load(config.read_text())
    data["gates"] = {"load": {"slo": SLO, "regression_pct": 20}}
    data["watch"] = {"window_s": W, "min_requests": 20, "alert_for_s": 0}
    data["promotion"]["release_managers"].append("modelgate-watch")
    data["promotion"]["auto_rollback"] = {"enabled": True, "consecutive_windows": 2}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    git(root, "commit", "--quiet", "-am", "watch, auto_rollback")
    v1 = released(config, uri, 1)
    v2 = record_gate(config, uri, 2)
    assert approve(config, uri, v2).returncode == 0
    return config, v1, v2


def _watch(team, uri, url, *extra):
    return modelgate(team, uri, "watch", "--prometheus-url", url, *extra)


@pytest.fixture(scope="module")
def scenario(prometheus, mlflow_server, github_fake_server, tmp_path_factory):
    """The timeline, run once: W+4 s of the previous version, the promotion, W+2 s healthy, W s degraded; each
    phase judged at its end (consecutive_windows 2 with auto_rollback on). The team's versions are served beside
    the stand-ins (v1 until its successor's promotion finished): `modelgate watch` after the healthy phase, watch's
    own function (pipeline/watch/run.py: watch, which the command calls) at the end of the first degraded window;
    then W s more degraded, so that two whole windows are: `modelgate watch` with Prometheus unreachable (exit 3),
    then `modelgate watch` (the rollback)."""
    server, exporter = prometheus
    github = github_fake_server
    github.reset()
    github.state.add_repo(FAKE_REPO)
    with pytest.MonkeyPatch.context() as env:  # what the promote, rollback and watch workflows hold
        env.setenv("GITHUB_TOKEN", github.token)
        yield _timeline(server, exporter, mlflow_server, github, tmp_path_factory)
    violations, github.violations[:] = list(github.violations), []
    assert not violations, "requests GitHub's OpenAPI description does not allow:\n" + "\n".join(violations)


def _timeline(server, exporter, mlflow_server, github, tmp_path_factory):
    release = _release(tmp_path_factory.mktemp("watch"), auto_rollback={"enabled": True, "consecutive_windows": 2})
    prom = Prometheus(server.url)
    start = time.monotonic()
    exporter.set(PREVIOUS, 20)
    exporter.set(TEAM_V1, 20)
    team, v1, v2 = _team(tmp_path_factory.mktemp("watch-team") / "team", mlflow_server, github)
    uri = mlflow_server
    time.sleep(max(0.0, W + 4 - (time.monotonic() - start)))  # a whole window of traffic after the first scrape
    promoted_at = time.time()
    exporter.set(PREVIOUS, 0)
    exporter.set(CURRENT, 20)
    exporter.set(TEAM_V2, 20)
    promoted = promote(team, uri, v2)
    assert promoted.returncode == 0, promoted.stderr
    exporter.set(TEAM_V1, 0)
    prod = Production(release.model_name, "2", CURRENT, promoted_at, None, "1", PREVIOUS)
    time.sleep(W + 2)
    t1 = time.time()
    healthy = judge_windows(release, prom, prod, t1, 1, progress=lambda _: None)
    alerts_healthy = _alert_values(prom, release, t1)
    watch_healthy = _watch(team, uri, server.url, "--json")
    exporter.set(CURRENT, 20, latency=3, length=0.5)
    exporter.set(TEAM_V2, 20, latency=3, length=0.5)
    degraded_at = time.time()
    time.sleep(W)  # the newest window is degraded, the one before it is not
    t2 = time.time()
    lines: list[str] = []
    degraded = judge_windows(release, prom, prod, t2, 2, progress=lines.append)
    exporter.set(CURRENT, 0)
    alerts_degraded = _alert_values(prom, release, t2)
    once_lines: list[str] = []  # at t2 itself (a busy machine's delay would slide the older window into the
    watch_once = watch(load_release(team), uri, server.url, now=t2, progress=once_lines.append)  # degraded phase)
    time.sleep(max(0.0, degraded_at + 2 * W + 1 - time.time()))  # two whole windows degraded
    unreachable = _watch(team, uri, f"http://127.0.0.1:{free_port()}")
    production_after_unreachable = alias(uri, model_of(team), "production")
    watch_rollback = _watch(team, uri, server.url)
    exporter.set(TEAM_V2, 0)
    deployments = [{**d, "statuses": [st["state"] for st in github.state.deployment_statuses.get(d["id"], [])]}
                   for d in github.state.deployments_in(FAKE_REPO)]
    return {"release": release, "deployments": deployments, "github_token": github.token,
            "prom": prom, "healthy": healthy, "degraded": degraded, "lines": lines,
            "alerts_healthy": alerts_healthy, "alerts_degraded": alerts_degraded, "prod": prod, "t2": t2,
            "team": team, "uri": uri, "v1": v1, "v2": v2, "watch_healthy": watch_healthy, "watch_once": watch_once,
            "once_lines": once_lines, "unreachable": unreachable,
            "production_after_unreachable": production_after_unreachable, "watch_rollback": watch_rollback}


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
                            "ModelgateFailedShareAboveSlo", "ModelgateUnfinishedShareAboveSlo"}
    assert healthy["ModelgateP95E2eLatencyAboveSlo"] < 3000 < degraded["ModelgateP95E2eLatencyAboveSlo"]
    assert healthy["ModelgateP95TimeToFirstTokenAboveSlo"] < 800 < degraded["ModelgateP95TimeToFirstTokenAboveSlo"]
    assert healthy["ModelgateFailedShareAboveSlo"] == 0 == degraded["ModelgateFailedShareAboveSlo"]
    # slower answers, the same arrivals finished: no backlog piled up in either phase
    assert all(abs(phase["ModelgateUnfinishedShareAboveSlo"]) < 0.2 for phase in (healthy, degraded))
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
    assert check.returncode == 0 and "SUCCESS: 6 rules found" in check.stdout, check.stdout + check.stderr
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
    """Prometheus lists its scrape target (it may take a moment after /-/ready: discovery runs on its own, and in
    a shuffled order this test can be the module's first) as up or not yet scraped."""
    server, _ = prometheus
    deadline = time.monotonic() + 30
    while not (targets := httpx.get(f"{server.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]):
        assert time.monotonic() < deadline, "Prometheus listed no scrape target within 30 s"
        time.sleep(0.2)
    assert targets[0]["health"] in ("up", "unknown")


def _audit(scenario):
    from pipeline.releasing import chain

    return chain.audit_log(load_release(scenario["team"]), scenario["uri"])


def _promotion_of_v2(scenario):
    log = _audit(scenario)
    return next(e for e in log.events(model_of(scenario["team"]), event="promote") if e.version == scenario["v2"])


def test_watch_finds_a_real_promotion_and_its_predecessor_from_the_alias_and_the_sealed_trail(scenario):
    proc = scenario["watch_healthy"]
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    promotion = _promotion_of_v2(scenario)
    assert (doc["status"], doc["version"], doc["served_name"]) == (judge.HEALTHY, scenario["v2"], TEAM_V2)
    assert (doc["previous_version"], doc["previous_served_name"]) == (scenario["v1"], TEAM_V1)
    assert doc["promoted_at"] == promotion.tags["modelgate.finished_at"] and promotion.verified
    assert 1 <= len(doc["windows"]) <= 2  # consecutive_windows: as many of them as are wholly after the promotion
    for window in doc["windows"]:
        assert window["status"] == judge.HEALTHY and window["compared"] == f"vs {TEAM_V1} before the promotion"
        assert window["window"]["start"] >= doc["promoted_at"], (window["window"], doc["promoted_at"])
        e2el = next(s for s in window["signals"] if s["name"] == "p95_e2el_ms")
        assert "vs previous" in " ".join(e2el["evidence"]) and TEAM_V2 in e2el["query"]


def test_each_judgement_is_recorded_on_the_promotions_audit_run_and_the_seal_still_verifies(scenario):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=scenario["uri"])
    promotion = _promotion_of_v2(scenario)
    files = [f.path for f in client.list_artifacts(promotion.run_id, "watch")]
    assert len(files) == 3 and all(f.startswith("watch/") and f.endswith(".json") for f in files), files
    dst = scenario["team"].parent / "downloaded"
    dst.mkdir(exist_ok=True)
    recorded = [json.loads(Path(client.download_artifacts(promotion.run_id, f, str(dst))).read_text())
                for f in sorted(files)]
    assert [r["status"] for r in recorded] == [judge.HEALTHY, judge.DEGRADED, judge.DEGRADED]
    assert recorded[-1]["rolled_back_to"] is None  # recorded before the rollback; the rollback's own run says it
    assert all(r["version"] == scenario["v2"] and r["served_name"] == TEAM_V2 for r in recorded)
    history = client.get_metric_history(promotion.run_id, "watch.status_degraded")
    assert [m.value for m in sorted(history, key=lambda m: m.timestamp)] == [0.0, 1.0, 1.0]
    assert client.get_run(promotion.run_id).data.metrics["watch.p95_e2el_ms"] > SLO["p95_e2el_ms"]
    model = model_of(scenario["team"])
    events = _audit(scenario).events(model)
    assert events and all(e.verified for e in events), [(e.event, e.problem) for e in events]
    assert _audit(scenario).get(promotion.run_id).verified
    text = modelgate(scenario["team"], scenario["uri"], "history")
    assert text.returncode == 0 and "UNVERIFIED" not in text.stdout, text.stdout


def test_one_degraded_window_of_a_real_promotion_after_a_healthy_one_rolls_nothing_back(scenario):
    result = scenario["watch_once"]
    assert result.status == judge.DEGRADED and result.production.version == scenario["v2"]
    assert [j.status for j in result.judgements] == [judge.DEGRADED, judge.HEALTHY]
    assert result.rolled_back_to is None and not any("auto_rollback" in line for line in scenario["once_lines"])
    assert any(line.startswith("recorded on the promotion's audit run") for line in scenario["once_lines"])


def test_prometheus_unreachable_mid_way_is_exit_3_and_rolls_nothing_back(scenario):
    proc = scenario["unreachable"]
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "did not answer" in proc.stderr and f"v{scenario['v2']} served as {TEAM_V2}" in proc.stderr
    assert scenario["production_after_unreachable"] == scenario["v2"]


def test_consecutive_degraded_windows_roll_a_real_promotion_back_as_modelgate_watch_with_the_evidence(scenario):
    team, uri, v1, v2 = scenario["team"], scenario["uri"], scenario["v1"], scenario["v2"]
    proc = scenario["watch_rollback"]
    assert proc.returncode == 1, proc.stderr
    assert f"degraded; rolled back to v{v1}" in proc.stdout
    assert "auto_rollback: 2 consecutive degraded windows: rolling back as modelgate-watch" in proc.stderr
    model = model_of(team)
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v1, None)
    rollbacks = _audit(scenario).events(model, event="rollback")
    assert len(rollbacks) == 1
    (ev,) = rollbacks
    assert ev.verified and ev.actor == "modelgate-watch" and (ev.version, ev.from_version) == (v1, v2)
    assert ev.state == "completed"
    assert ev.reason.startswith(f"modelgate watch: 2 consecutive degraded window(s) of {TEAM_V2}: ")
    assert "p95_e2el_ms=" in ev.reason and "SLO 3000 ms: above" in ev.reason and "histogram_quantile" in ev.reason
    resolved = modelgate(team, uri, "resolve", "production", "--json")
    assert resolved.returncode == 0, resolved.stderr
    doc = json.loads(resolved.stdout)
    assert (doc["version"], doc["revision"], doc["served_name"]) == (v1, revision(1), TEAM_V1)
    assert ev.tags["modelgate.git_tag"] == f"{model}/v{v1}"
    tag = git(team.parent, "for-each-ref", f"refs/tags/{model}/v{v1}", "--format=%(contents)")
    assert f"revision: {revision(1)}" in tag
    assert f"{model}/v{v1}" in git(team.parent.parent / "team-origin.git", "tag", "--list").split()
    history = modelgate(team, uri, "history").stdout
    assert f"rollback  v{v1} from v{v2} by modelgate-watch: modelgate watch: 2 consecutive" in history
    assert "UNVERIFIED" not in history
    # GitHub: the rollback is a deployment of v1 to production, as the command's (fake GitHub, OpenAPI-checked)
    deployments = scenario["deployments"]
    assert [(d["payload"]["action"], d["payload"]["version"]) for d in deployments] == \
        [("promote", v1), ("promote", v2), ("rollback", v1)], deployments
    last = deployments[-1]
    assert last["environment"] == "production" and last["statuses"] == ["success"]
    assert last["payload"]["revision"] == revision(1)
    assert scenario["github_token"] not in proc.stdout + proc.stderr + ev.reason


def test_a_version_that_cannot_keep_up_is_judged_at_its_arrivals_on_real_prometheus(prometheus, tmp_path):
    """Both versions are offered 10 requests a second; the previous one finishes them all, the slower one 4 a second
    and the rest wait in its queue. Counted at arrival (finished + the growth of those running or waiting), both
    windows have ~10 req/s, so they are compared (counted at finish they were 4 vs 10: not comparable, the slower
    version escaped the comparison), and the slower one is degraded on its unfinished share, against the SLO and
    against the previous version. Prometheus evaluates every query."""
    from pipeline.watch.observe import observe

    server, exporter = prometheus
    previous, slower = "chat@dddddddddddd", "chat@eeeeeeeeeeee"
    release = _release(tmp_path)
    exporter.set(previous, 10)
    exporter.set(slower, 10, capacity=4)
    time.sleep(W + 3)
    at = time.time()
    prom = Prometheus(server.url)
    before, after = observe(prom, previous, at, W), observe(prom, slower, at, W)
    exporter.set(previous, 0)
    exporter.set(slower, 0)
    assert 7 <= before["request_rate"] <= 13 and 7 <= after["request_rate"] <= 13, (before, after)
    assert after["finished"] / W < 6 and after["requests"] > 1.5 * after["finished"], after
    assert abs(before["unfinished_share"]) < 0.15 and 0.4 < after["unfinished_share"] < 0.75, (before, after)
    assert judge.comparable(after, before, release) is None
    j = judge.judge(after, before, release)
    assert j.status == judge.DEGRADED and "unfinished_share" in {s.name for s in j.degraded()}, judge.lines(j)
    sig = next(s for s in j.signals if s.name == "unfinished_share")
    assert "vllm:num_requests_running" in sig.query and "offset 6s" in sig.query
    assert sig.evidence[0].startswith("SLO 0.25: at least") and sig.evidence[1].endswith("regressed")
    # the alerting rule asks the same question: it fires for the slower version, not for the previous one
    rule = next(r for r in alerts.rules(release, slower)["groups"][0]["rules"]
                if r["alert"] == "ModelgateUnfinishedShareAboveSlo")
    assert prom.query(rule["expr"], at) and rule["labels"]["served_name"] == slower
    previous_rule = next(r for r in alerts.rules(release, previous)["groups"][0]["rules"]
                         if r["alert"] == "ModelgateUnfinishedShareAboveSlo")
    assert not prom.query(previous_rule["expr"], at)
