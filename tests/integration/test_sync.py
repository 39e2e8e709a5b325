"""`modelgate sync` against a real `mlflow server` process that this module stops and starts again.

The gate runs in-process with stand-in stages (no vLLM): what is under test is the recording, not serving.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pipeline.config.release import load_release
from pipeline.core.result import StageResult, Status
from pipeline.errors import InfraError
from pipeline.gate.run import run_gate
from pipeline.integrations import registry
from tests.support import cli
from tests.support.mlflow_server import MlflowServer
from tests.support.records import version_record
from tests.support.releases import write_release

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-sync"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _fail_fast_mlflow_client(monkeypatch):
    # MLflow's client retries a refused connection for ~4 minutes by default; the test wants the failure now
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def make_release(root: Path, model: str):
    return load_release(write_release(root, model=model))


def stand_in_stages(on_evals=None):
    def fetch(ctx):
        out = ctx.run_dir / "fetch"
        out.mkdir(parents=True, exist_ok=True)
        (out / "files.txt").write_text("config.json\nmodel.safetensors\n")
        return StageResult("fetch", Status.PASSED, metrics={"files": 2}, reasons=["2 file(s) verified"],
                           artifacts={"files.txt": str(out / "files.txt")})

    def evals(ctx):
        ctx.items["demo/acc"] = {"a": 1.0, "b": 0.0, "c": 1.0}
        ctx.digests["evalsets"] = "e" * 64
        if on_evals:
            on_evals()
        return StageResult("evals", Status.PASSED, metrics={"demo.acc": 2 / 3}, reasons=["3 items"])

    return (("fetch", fetch), ("evals", evals))


def store_state(uri: str, model: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(f"modelgate/{model}")
    runs = [] if exp is None else client.search_runs([exp.experiment_id])
    versions = client.search_model_versions(f"name='{model}'")
    return client, runs, versions


def sync_cli(*args: str, uri: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return cli.run_subprocess("sync", *args, env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
                              timeout=180, cwd=cwd)


def test_report_kept_while_tracking_is_down_is_synced_once(server, tmp_path):
    model = "sync-down"
    release = make_release(tmp_path / "team", model)
    run_dir = tmp_path / "team" / "runs" / "g1"
    with pytest.raises(InfraError) as caught:  # the server goes away while the gate runs
        run_gate(release, home=tmp_path / "home", run_dir=run_dir, tracking_uri=server.uri,
                 stages=stand_in_stages(on_evals=server.stop))
    message = caught.value.one_line()
    assert f"modelgate sync --run-dir {run_dir}" in message and "report.json" in message
    kept = json.loads((run_dir / "report.json").read_text())
    assert kept["verdict"] == "passed" and kept["tracking"]["run_id"] is None and kept["tracking"]["error"]
    assert json.loads((run_dir / "items.json").read_text())["items"]["demo/acc"] == {"a": 1.0, "b": 0.0, "c": 1.0}

    down = sync_cli("--run-dir", str(run_dir), uri=server.uri)  # still down: exit 3, nothing changed
    assert down.returncode == 3 and down.stderr.startswith("modelgate: InfraError: "), down.stderr

    server.start()
    _, runs, versions = store_state(server.uri, model)
    assert runs == [] and versions == []
    first = sync_cli("--run-dir", str(run_dir), uri=server.uri)
    assert first.returncode == 0, first.stderr
    assert f"{kept['gate_id']}: recorded (run " in first.stdout
    client, runs, versions = store_state(server.uri, model)
    assert len(runs) == 1 and len(versions) == 1
    run, mv = runs[0], versions[0]
    assert run.data.tags["modelgate.gate_id"] == kept["gate_id"] and run.info.status == "FINISHED"
    assert run.data.params["revision"] == release.candidate.revision and run.data.metrics["evals.demo.acc"] > 0.6
    assert mv.run_id == run.info.run_id and mv.source == release.candidate.uri()
    assert mv.tags["modelgate.gate_run_id"] == run.info.run_id and mv.tags["modelgate.verdict"] == "passed"
    assert mv.tags["modelgate.revision"] == release.candidate.revision
    assert version_record(server.uri, model, mv.version)["digests"]["evalsets"] == "e" * 64
    assert client.get_model_version_by_alias(model, registry.CANDIDATE).version == mv.version
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.md", "report.html", "items.json"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "stages/fetch")] == ["stages/fetch/files.txt"]
    assert run.data.tags["modelgate.traces"] == "3 traces"  # the per-item traces, logged by sync
    assert len(item_traces(client, run)) == 3
    uploaded = json.loads(Path(client.download_artifacts(run.info.run_id, "report.json", str(tmp_path))).read_text())
    local = json.loads((run_dir / "report.json").read_text())
    assert uploaded["tracking"]["model_version"] == local["tracking"]["model_version"] == mv.version
    assert local["tracking"]["run_id"] == run.info.run_id and "error" not in local["tracking"]

    again = sync_cli("--run-dir", str(run_dir), uri=server.uri)
    assert again.returncode == 0 and f"{kept['gate_id']}: already recorded" in again.stdout, again.stderr
    every = sync_cli("--all", "--config", str(tmp_path / "team" / "release.yaml"), uri=server.uri)
    assert every.returncode == 0 and "already recorded" in every.stdout, every.stderr
    _, runs, versions = store_state(server.uri, model)
    assert len(runs) == 1 and len(versions) == 1
    assert len(item_traces(client, runs[0])) == 3  # exactly once


def item_traces(client, run):
    return client.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, max_results=50,
                                include_spans=False)


def test_record_that_failed_after_creating_the_run_is_resumed_without_a_second_run(server, tmp_path, monkeypatch):
    from pipeline.gate import sync

    model = "sync-half"
    release = make_release(tmp_path / "team", model)
    run_dir = tmp_path / "team" / "runs" / "g2"
    real = registry.register_version

    def registry_down(*args, **kwargs):
        raise InfraError("registering in MLflow failed: ConnectionError: the registry went away")

    monkeypatch.setattr(registry, "register_version", registry_down)
    with pytest.raises(InfraError, match="modelgate sync"):
        run_gate(release, home=tmp_path / "home", run_dir=run_dir, tracking_uri=server.uri, stages=stand_in_stages())
    half = json.loads((run_dir / "report.json").read_text())
    assert half["tracking"]["run_id"] and not half["tracking"].get("model_version")
    _, runs, versions = store_state(server.uri, model)
    assert [r.info.run_id for r in runs] == [half["tracking"]["run_id"]] and versions == []

    monkeypatch.setattr(registry, "register_version", real)
    outcome = sync.sync_run_dir(run_dir, uri_override=server.uri, progress=lambda m: None)
    assert outcome.status == "recorded" and outcome.run_id == half["tracking"]["run_id"]
    _, runs, versions = store_state(server.uri, model)
    assert len(runs) == 1 and [v.run_id for v in versions] == [half["tracking"]["run_id"]]
    assert sync.sync_run_dir(run_dir, uri_override=server.uri, progress=lambda m: None).status == "already recorded"


def test_report_without_run_id_finds_its_run_by_gate_id(server, tmp_path, monkeypatch):
    """The run was created but its id never reached the local report (the answer was lost): found by tag."""
    from pipeline.gate import sync

    model = "sync-lost"
    release = make_release(tmp_path / "team", model)
    run_dir = tmp_path / "team" / "runs" / "g3"
    monkeypatch.setattr(registry, "register_version",
                        lambda *a, **k: (_ for _ in ()).throw(InfraError("registry down")))
    with pytest.raises(InfraError):
        run_gate(release, home=tmp_path / "home", run_dir=run_dir, tracking_uri=server.uri, stages=stand_in_stages())
    monkeypatch.undo()
    report = json.loads((run_dir / "report.json").read_text())
    run_id = report["tracking"]["run_id"]
    report["tracking"]["run_id"] = None
    (run_dir / "report.json").write_text(json.dumps(report))
    assert sync.sync_run_dir(run_dir, uri_override=server.uri, progress=lambda m: None).run_id == run_id
    _, runs, versions = store_state(server.uri, model)
    assert len(runs) == 1 and len(versions) == 1


def test_interrupted_and_missing_reports(tmp_path, server):
    from pipeline.gate import sync

    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    (run_dir / "report.json").write_text(json.dumps({
        "schema_version": 1, "gate_id": "x", "model_name": "m", "stages": [],
        "candidate": {"source": "git", "repo": "hub/m", "revision": "a" * 40, "uri": "git://hub/m@" + "a" * 40},
        "tracking": {"uri": server.uri}, "verdict": "interrupted"}))
    assert sync.sync_run_dir(run_dir, progress=lambda m: None).status == "skipped"
    missing = sync_cli("--run-dir", str(tmp_path / "nowhere"), uri=server.uri)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith(f"modelgate: error: {tmp_path / 'nowhere'}: "), missing.stderr
