"""Per-item traces in a real (sqlite) MLflow store: logged once per gate run, and a store that refuses them
leaves a note on the run rather than failing the gate."""

from __future__ import annotations

import pytest

from pipeline.errors import InfraError
from pipeline.integrations import traces
from tests.support.reports import report_with_items

pytestmark = pytest.mark.integration


def test_traces_are_logged_once_and_a_failure_is_noted_on_the_run_not_raised(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("gates", artifact_location=(tmp_path / "artifacts").as_uri())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    report = report_with_items(run_dir)

    broken = client.create_run(exp).info.run_id

    def refuse(*args, **kwargs):
        raise InfraError("the store refused")

    monkeypatch.setattr(traces, "log_traces", refuse)
    note = traces.ensure_traces(uri, report.with_tracking(run_id=broken, experiment_id=exp), run_dir)
    assert "not logged: the store refused" in note and "modelgate sync --run-dir" in note
    assert client.get_run(broken).data.tags[traces.TRACES_TAG] == "not logged: the store refused"
    monkeypatch.undo()

    run_id = client.create_run(exp).info.run_id
    recorded = report.with_tracking(run_id=run_id, experiment_id=exp)
    assert traces.ensure_traces(uri, recorded, run_dir) == "4 per-item traces logged"
    assert traces.ensure_traces(uri, recorded, run_dir) == "per-item traces already logged (4 traces)"
    logged = client.search_traces(locations=[exp], run_id=run_id, max_results=10)
    assert len(logged) == 4
    b = next(t for t in logged if "support/b" in (t.info.request_preview or ""))
    assert {(a.name, a.value) for a in b.info.assessments} == {("passed", False), ("json_schema", False),
                                                               ("max_chars", True)}
    assert b.info.request_metadata["mlflow.sourceRun"] == run_id
