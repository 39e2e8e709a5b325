"""The replay gate through the real gate runner, report renderings and MLflow (sqlite), with the candidate and
production as stand-in chat endpoints on loopback (tests/support/fake_chat.py; the real vLLM path is in
tests/e2e/test_variants_e2e.py): no production version -> absolute floors; a candidate that breaks the
response_format schemas is rejected against production's answers recorded in the traffic and by production's own
gate (no boot of production), regressions first; what neither answers is asked at production's own server or
production booted on staging (stood in); no email, phone or card number of the
recorded traffic reaches any file of the run directory or any MLflow artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config.release import load_release
from pipeline.core.result import StageResult, Status
from pipeline.demo import traffic as demo_traffic
from pipeline.gate import run as gate
from pipeline.gate.stages import replay
from pipeline.report import markdown
from pipeline.util import pii
from tests.support.fake_chat import fake_chat
from tests.support.releases import write_release
from tests.support.replay import EMAIL, good

pytestmark = pytest.mark.integration

REV_1 = "1111111111111111111111111111111111111111"
REV_2 = "2222222222222222222222222222222222222222"
GATES = {"replay": {"path": "traffic.jsonl", "sample": {"size": 60, "seed": 1, "strata": "client"},
                    "pass_rate": {"margin": 0.15}}}


def broken(body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None, str]:
    """A candidate whose answers to response_format schemas are prose around the JSON."""
    content, calls, finish = good(body)
    if (body.get("response_format") or {}).get("type") == "json_schema":
        return f"Sure! Here is the order: {content}", None, "stop"
    return content, calls, finish


def bare_arguments(arguments: str) -> str:
    """A tool call's arguments as a bare JSON string (the first value), as vLLM answered the demo's tools
    without `strict` (README, replay): `"NW-867589"`, not `{"order_id": "NW-867589"}`."""
    return json.dumps(next(iter(json.loads(arguments).values())))


def bare(answer):
    """`answer` with every tool call's arguments bare: no tool call of it passes replay/tool_call."""
    def wrapped(body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None, str]:
        content, calls, finish = answer(body)
        return content, calls and [{**c, "arguments": bare_arguments(c["arguments"])} for c in calls], finish
    return wrapped


def replay_team(tmp_path: Path, revision: str, production_name: str, bare_tools: bool = False,
                traffic_seed: int = 5) -> Path:
    """release.yaml pinning `revision`, and the demo traffic: 3 of 4 answers recorded by `production_name`, the
    rest by an older production (asked again in the gate); `bare_tools`: production's tool calls recorded bare."""
    records = demo_traffic.generate(120, seed=traffic_seed, served_name=production_name)
    for i, rec in enumerate(records):
        if i % 4 == 3:
            rec["response"]["model"] = "chat@0ld0ld0ld0ld"
        for call in rec["response"]["choices"][0]["message"].get("tool_calls") or [] if bare_tools else []:
            call["function"]["arguments"] = bare_arguments(call["function"]["arguments"])
    demo_traffic.write(tmp_path / "traffic.jsonl", records)
    return write_release(tmp_path, model="replay-it", candidate={
        "source": "git", "repo": "hub/model", "revision": revision,
        "files": {"config.json": "a" * 64, "model.safetensors": "b" * 64}}, gates=GATES)


def run_gate(config: Path, answer, tmp_path: Path, uri: str, name: str):
    release = load_release(config)

    def serve(ctx) -> StageResult:
        endpoint = ctx.cleanup.enter_context(fake_chat(answer, release.served_name(release.candidate)))
        ctx.endpoint = endpoint
        return StageResult("serve", Status.PASSED)

    return gate.run_gate(release, home=tmp_path / "home", run_dir=tmp_path / name, tracking_uri=uri,
                         stages=(("serve", serve), ("replay", replay.run)))


def personal_values(path: Path) -> set[str]:
    values = set()
    for line in path.read_text().splitlines():
        for message in json.loads(line)["request"]["messages"]:
            values |= pii.found(message["content"])
    return values


def test_replay_gate_rejects_a_regression_paired_with_production_and_stores_no_personal_data(
        tmp_path, monkeypatch):
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = replay_team(tmp_path / "t1", REV_1, "chat@" + REV_1[:12])
    report = run_gate(first, bare(good), tmp_path, uri, "first")  # production's own answers: tool calls bare
    stage = report.stage("replay")
    assert report.exit_code == 0 and stage is not None and stage.status == Status.PASSED
    recorded = json.loads((Path(report.run_dir) / "items.json").read_text())["replay_answers"]
    assert len(recorded) == 60 and not any(EMAIL.search(a["text"]) for a in recorded.values())  # scrubbed
    assert stage.details["production"] is None and stage.details["sampled"] == 60
    assert stage.reasons[0].startswith("60 sampled of ")
    MlflowClient(tracking_uri=uri).set_registered_model_alias("replay-it", "production", "1")

    asked: list[str] = []

    def ask_production(ctx, pin, records, progress):  # production's boot stood in: the same code asks it
        assert pin.revision == REV_1
        asked.extend(r.key for r in records)
        with fake_chat(bare(good), "chat@" + REV_1[:12]) as endpoint:
            return replay.ask(endpoint, records, concurrency=2, progress=progress)

    monkeypatch.setattr(replay, "ask_production", ask_production)
    second = replay_team(tmp_path / "t2", REV_2, "chat@" + REV_1[:12], bare_tools=True)  # as on the demo, before strict
    report = run_gate(second, bare(broken), tmp_path, uri, "second")
    stage = report.stage("replay")
    assert stage is not None and stage.status == Status.FAILED and report.exit_code == 1
    prod = stage.details["production"]
    # the traffic recorded 3 in 4 answers by production; its own gate answered the rest: production is not booted
    assert prod["version"] == "1" and prod["recorded"] > 0 and prod["from_gate"] > 0 and prod["asked"] == 0
    assert prod["recorded"] + prod["from_gate"] == 60 and asked == []
    assert prod["asked_at"] == "record"
    assert f"{prod['from_gate']} recorded by its own gate, 0 asked in this gate" in \
        (Path(report.run_dir) / "report.md").read_text()
    rows = {m["name"]: m for m in stage.details["metrics"]}
    assert rows["replay/json_schema"]["verdict"] == "fail" and rows["replay/json_schema"]["baseline_mean"] == 1.0
    assert rows["replay/non_empty"]["verdict"] == "pass" and rows["replay/non_empty"]["n"] == 60
    assert rows["replay/tool_call"]["verdict"] != "fail" and rows["replay/tool_call"]["delta"] == 0  # too few to pass
    # ... but production passes no tool call either: the check has no power, said wherever the verdict is
    tool = stage.details["per_check"]["tool_call"]
    flag = f"no power: production passes 0 of {tool['n']}"
    assert tool["production_passes"] == 0 and tool["n"] > 5 and tool["flag"] == "no power"
    assert any(r.startswith(f"replay: replay/tool_call: {flag}") for r in report.reasons)
    assert any(r.startswith("replay: replay/json_schema: candidate 0 vs baseline 1") for r in report.reasons)
    first_row = stage.details["requests"][0]
    assert first_row["regressed"] == ["json_schema"] and "not JSON" in \
        first_row["checks"]["json_schema"]["candidate_reason"]
    assert first_row["candidate"].startswith("Sure! Here is the order") and first_row["production"].startswith("{")

    run_dir = Path(report.run_dir or "")
    markdown_text = (run_dir / "report.md").read_text()
    assert "### Replay of production traffic" in markdown_text and "60 sampled of" in markdown_text
    assert "**regression**" in markdown_text and "json\\_schema: not JSON" in markdown_text
    assert f"- **replay/tool\\_call: {markdown.inline(flag)}" in markdown_text and "no power |" in markdown_text
    html = (run_dir / "report.html").read_text()
    assert "Replay of production traffic" in html and "regression</span>" in html
    assert f"replay/tool_call: {flag}" in html
    run = MlflowClient(tracking_uri=uri).get_run(report.tracking.run_id or "")
    assert run.data.tags["modelgate.replay_power"].startswith(f"replay/tool_call: {flag}")
    assert run.data.metrics["replay.tool_call.no_power"] == 1.0 and run.data.metrics["replay.non_empty.no_power"] == 0

    # privacy: nothing personal from the recorded requests in any stored file, locally or in MLflow
    values = personal_values(tmp_path / "t2" / "traffic.jsonl")
    assert any("@example.com" in v for v in values) and any("555" in v for v in values)
    assert any("4111" in v or "5555" in v or "4012" in v for v in values)
    downloaded = Path(download_artifacts(run_id=report.tracking.run_id, dst_path=str(tmp_path / "artifacts"),
                                         tracking_uri=uri))
    files = [p for p in [*run_dir.rglob("*"), *downloaded.rglob("*")] if p.is_file()]
    assert {"replay.jsonl", "comparison.csv", "report.json", "report.md", "report.html"} <= {p.name for p in files}
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        for value in values:
            assert value not in text, f"{value!r} leaked into {path}"
    assert "[email]" in (run_dir / "replay" / "replay.jsonl").read_text() or "***" in \
        (run_dir / "replay" / "replay.jsonl").read_text()


def test_what_the_record_does_not_answer_is_asked_at_productions_own_server_when_it_serves_production(
        tmp_path, monkeypatch):
    """gates.replay.production_endpoint: production's running server answers what its record does not (no boot
    on staging), with its own key; a server that serves another version is not asked: production is booted on
    staging and the report says why. An unset key variable is bad input before anything runs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = run_gate(replay_team(tmp_path / "t1", REV_1, "chat@" + REV_1[:12]), good, tmp_path, uri, "first")
    assert report.exit_code == 0
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).set_registered_model_alias("replay-it", "production", "1")
    booted: list[str] = []

    def ask_production(ctx, pin, records, progress):  # production's boot on staging, stood in
        booted.extend(r.key for r in records)
        with fake_chat(good, "chat@" + REV_1[:12]) as endpoint:
            return replay.ask(endpoint, records, concurrency=2, progress=progress)

    monkeypatch.setattr(replay, "ask_production", ask_production)

    def gate_with_endpoint(name: str, endpoint_url: str):  # traffic production's gate never saw: asked
        team = replay_team(tmp_path / name, REV_2, "chat@" + REV_1[:12], traffic_seed=6)
        doc = yaml.safe_load(team.read_text())
        doc["gates"]["replay"]["production_endpoint"] = {"url": endpoint_url + "/v1", "api_key_env": "PROD_KEY"}
        team.write_text(yaml.safe_dump(doc))
        return run_gate(team, good, tmp_path, uri, name)

    monkeypatch.setenv("PROD_KEY", "prod-key-0123456789")
    with fake_chat(good, "chat@" + REV_1[:12], api_key="prod-key-0123456789") as production:
        report = gate_with_endpoint("t2", production.base_url)
    prod = report.stage("replay").details["production"]
    assert prod["asked"] == len(production.requests) > 0 and booted == []  # asked there, nothing booted
    assert prod["asked_at"] == "endpoint" and prod["why"].endswith(f"serves chat@{REV_1[:12]}")
    assert all(body["model"] == "chat@" + REV_1[:12] for body in production.requests)
    assert report.exit_code in (0, 4)  # the same answers: passed, or inconclusive where a check has few requests
    assert "prod-key-0123456789" not in (Path(report.run_dir) / "report.json").read_text()
    assert "asked in this gate at its own server" in (Path(report.run_dir) / "report.md").read_text()

    with fake_chat(good, "chat@" + REV_2[:12], api_key="prod-key-0123456789") as rolled_out:  # another version
        report = gate_with_endpoint("t3", rolled_out.base_url)
    prod = report.stage("replay").details["production"]
    assert prod["asked_at"] == "staging" and booted and prod["asked"] == len(booted)
    assert rolled_out.requests == [] and f"it serves chat@{REV_2[:12]}, not chat@{REV_1[:12]}" in prod["why"]
    assert "booted on staging" in (Path(report.run_dir) / "report.md").read_text()

    monkeypatch.delenv("PROD_KEY")
    with pytest.raises(Exception) as refused:
        gate_with_endpoint("t4", "http://127.0.0.1:9")
    assert getattr(refused.value, "exit_code", None) == 2
    assert "gates.replay.production_endpoint.api_key_env" in str(refused.value)


def test_openai_batch_files_are_replayed_with_their_answers_as_productions(tmp_path, monkeypatch):
    """gates.replay.path names OpenAI Batch API input files and batch_output their output file: the gate replays
    the batch requests and pairs with the answers the output file holds (production's), asking only the rest."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    assert run_gate(replay_team(tmp_path / "t1", REV_1, "chat@" + REV_1[:12], traffic_seed=7), good, tmp_path,
                    uri, "first").exit_code == 0
    MlflowClient(tracking_uri=uri).set_registered_model_alias("replay-it", "production", "1")
    records = demo_traffic.generate(80, seed=8, served_name="chat@" + REV_1[:12])
    team = tmp_path / "t2"
    team.mkdir()
    with (team / "in.jsonl").open("w") as inputs, (team / "out.jsonl").open("w") as outputs:
        for i, rec in enumerate(records):
            inputs.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                     "body": rec["request"]}) + "\n")
            if i % 5:  # one in five batch requests has no answer: production is asked for those
                outputs.write(json.dumps({"id": f"b{i}", "custom_id": f"r{i}", "error": None,
                                          "response": {"status_code": 200, "body": rec["response"]}}) + "\n")
    config = write_release(team, model="replay-it", candidate={
        "source": "git", "repo": "hub/model", "revision": REV_2,
        "files": {"config.json": "a" * 64, "model.safetensors": "b" * 64}},
        gates={"replay": {**GATES["replay"], "path": "in.jsonl", "batch_output": "out.jsonl"}})
    booted: list[str] = []

    def ask_production(ctx, pin, recs, progress):
        booted.extend(r.key for r in recs)
        with fake_chat(good, "chat@" + REV_1[:12]) as endpoint:
            return replay.ask(endpoint, recs, concurrency=2, progress=progress)

    monkeypatch.setattr(replay, "ask_production", ask_production)
    report = run_gate(config, good, tmp_path, uri, "batch")
    stage = report.stage("replay")
    prod = stage.details["production"]
    assert stage.details["sampled"] == 60 and prod["recorded"] > 0 and prod["asked"] == len(booted) > 0
    assert prod["recorded"] + prod["from_gate"] + prod["asked"] == 60
    assert {row["source"].split(":")[0] for row in stage.details["requests"]} == {"in.jsonl"}


PRODUCTION_CLIENT = """
import json, sys
import mlflow, openai
from tests.support.fake_chat import fake_chat
from tests.support.replay import EMAIL, good
from tests.support.replay import good
served, experiment, requests = sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())
mlflow.set_experiment(experiment)
mlflow.openai.autolog()
with fake_chat(good, served) as production:
    client = openai.OpenAI(base_url=production.base_url + "/v1", api_key="unused")
    for body in requests:
        client.chat.completions.create(model=served, **body)
with mlflow.start_span("retrieval", span_type="RETRIEVER") as span:  # a trace that is not a chat request
    span.set_inputs({"query": "order status"})
    span.set_outputs({"documents": []})
mlflow.flush_trace_async_logging()
"""


def test_production_traced_with_mlflow_tracing_is_replayed_from_its_traces(tmp_path, mlflow_server):
    """The production service's client is instrumented with MLflow tracing (`mlflow.openai.autolog()`, a real
    OpenAI client, traces sent to the real tracking server): gates.replay.source mlflow_traces reads the window's
    traces of its experiment, one request per chat-completion span (a retrieval trace is counted, not replayed),
    and pairs with the answers production gave in them: a candidate that breaks the schemas is rejected."""
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from tests.support.cli import child_env
    from tests.support.paths import REPO

    experiment = f"support-production-{tmp_path.name}"
    bodies = [{k: v for k, v in rec["request"].items() if k != "model"}
              for rec in demo_traffic.generate(40, seed=9, served_name="unused")]
    proc = subprocess.run([sys.executable, "-c", PRODUCTION_CLIENT, "chat@" + REV_1[:12], experiment],
                          input=json.dumps(bodies), capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=child_env({"MLFLOW_TRACKING_URI": mlflow_server, "PYTHONPATH": str(REPO)}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    traces = {"experiment": experiment, "window_hours": 1}

    def traced_team(name: str, revision: str) -> Path:
        return write_release(tmp_path / name, model=f"traced-{tmp_path.name}"[:60], candidate={
            "source": "git", "repo": "hub/model", "revision": revision,
            "files": {"config.json": "a" * 64, "model.safetensors": "b" * 64}},
            gates={"replay": {"source": "mlflow_traces", "traces": traces, "sample": {"size": 30, "seed": 1},
                              "pass_rate": {"margin": 0.15}}})

    first = run_gate(traced_team("t1", REV_1), good, tmp_path, mlflow_server, "first")
    stage = first.stage("replay")
    assert first.exit_code == 0 and stage.details["recorded"] == len({json.dumps(b, sort_keys=True) for b in bodies})
    assert "1 trace(s) without a chat-completion span" in stage.reasons[0]
    MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(first.model_name, "production", "1")
    second = run_gate(traced_team("t2", REV_2), broken, tmp_path, mlflow_server, "second")
    stage = second.stage("replay")
    prod = stage.details["production"]
    assert prod["recorded"] == 30 and prod["asked"] == 0  # every answer from production's own traces
    assert second.exit_code == 1 and stage.status == Status.FAILED
    assert {row["source"].split(" ")[0] for row in stage.details["requests"]} == {"trace"}
    assert any(r.startswith("replay: replay/json_schema: candidate") for r in second.reasons)
    # an experiment that does not exist is bad input naming it, before anything runs or is recorded
    traces["experiment"] = "no-such-experiment"
    with pytest.raises(Exception) as refused:
        run_gate(traced_team("t3", REV_2), good, tmp_path, mlflow_server, "third")
    assert getattr(refused.value, "exit_code", None) == 2 and "gates.replay.traces.experiment" in str(refused.value)
