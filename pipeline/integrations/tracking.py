"""MLflow: where the tracking store is, whether it answers, and writing one gate as one MLflow run.

Default store: an embedded sqlite file `mlflow/mlflow.db` beside release.yaml, artifacts in
`mlflow/artifacts/`. --tracking-uri, `MLFLOW_TRACKING_URI` or release.yaml tracking.uri points it at a team
server (`resolve_uri` is the one place that decides). MLflow exceptions are mapped to InfraError here, at the
boundary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.core import tags as tagnames
from pipeline.errors import BadInput, InfraError
from pipeline.integrations.mlflow_errors import mlflow_errors
from pipeline.util.secrets import redact

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def default_uri(root: Path) -> str:
    return f"sqlite:///{(root / 'mlflow' / 'mlflow.db').resolve()}"


def resolve_uri(override: str | None, *, configured: str | None, root: Path | None) -> str:
    """The tracking store a command works on, first found wins:

    1. `override`: the command's --tracking-uri;
    2. $MLFLOW_TRACKING_URI (credentials belong here: they are never written to release.yaml or a report);
    3. `configured`: release.yaml's tracking.uri (gate, release commands), or the store a kept report
       recorded (sync);
    4. the embedded default beside release.yaml (`root`/mlflow/mlflow.db), when `root` is given.
    """
    uri = override or os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return uri
    if root is None:
        raise BadInput("no MLflow tracking store named: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    return default_uri(root)


def display_uri(uri: str) -> str:
    """The URI without credentials, for logs and reports."""
    parts = urlsplit(uri)
    if parts.password or parts.username:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def preflight(uri: str, timeout_s: float = 10.0) -> None:
    """Fail before the gate spends minutes, if the store cannot take the result."""
    if uri.startswith(("http://", "https://")):
        import httpx

        try:
            resp = httpx.get(uri.rstrip("/") + "/health", timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise InfraError(f"MLflow tracking server {display_uri(uri)} is unreachable ({type(exc).__name__}); "
                             "a gate that cannot be recorded cannot promote anything") from exc
        if resp.status_code != 200:
            raise InfraError(f"MLflow tracking server {display_uri(uri)} answered /health with {resp.status_code}")
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InfraError(f"cannot create the MLflow store directory {db.parent}: {exc.strerror}") from exc


VERDICT_TAG = tagnames.VERDICT
VERDICT_PARAM = "gate.verdict"  # also params: written once, so the verdict cannot be edited after the gate
EXIT_CODE_PARAM = "gate.exit_code"
RECORDING = "recording"  # the verdict tag of a run whose recording has not finished

_PARAM_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def param_key(key: str) -> str:
    return _PARAM_KEY.sub("_", key)[:250]


def _experiment_id(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = artifact_root.resolve().as_uri() if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


def find_gate_run(client: MlflowClient, experiment_id: str, gate_id: str) -> Run | None:
    """The run recorded for `gate_id` (tag modelgate.gate_id), or None."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`modelgate.gate_id` = '{gate_id}'",
                               max_results=1)
    return found[0] if found else None


def _existing_run(client: MlflowClient, exp_id: str, run_id: str | None, gate_id: str | None) -> Run | None:
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            run = client.get_run(run_id)
            if run.info.lifecycle_stage == "active":
                return run
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(getattr(exc, "error_code", "")):
                raise
    return find_gate_run(client, exp_id, gate_id) if gate_id else None


def record_run(uri: str, experiment: str, *, run_name: str, params: dict[str, Any], metrics: dict[str, float],
               tags: dict[str, str], artifacts: list[tuple[Path, str | None]], artifact_root: Path | None,
               on_run_id: Callable[[str, str], None] | None = None, failed: bool = False, run_id: str | None = None,
               gate_id: str | None = None, timestamp_ms: int | None = None) -> tuple[str, str]:
    """Create one finished run; returns (experiment_id, run_id). `on_run_id(experiment_id, run_id)` is called as soon as
    the run exists (the report embeds it before it is uploaded).

    Resumable: when `run_id` names an existing run, or a run is tagged `modelgate.gate_id` = `gate_id`, that run
    is completed instead of a second one created. Params are logged with the same values, metrics with the same
    `timestamp_ms` (MLflow skips an identical metric) and artifacts overwrite themselves, so doing it twice
    changes nothing."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout is the gate summary
    # until every param, metric and artifact is in, the run does not say "passed" (a half-recorded run is no pass)
    verdict = tags.get(VERDICT_TAG)
    tags = {k: redact(str(v)) for k, v in tags.items()}  # no secret in a tag or param, whatever the caller passed
    pending = {**tags, VERDICT_TAG: RECORDING} if verdict is not None else tags
    client = None
    # the store is unreachable: no use marking the run (the verdict tag says recording)
    with mlflow_errors(f"recording to MLflow at {display_uri(uri)} failed"):
        try:
            mlflow.set_tracking_uri(uri)
            client = MlflowClient(tracking_uri=uri)
            exp_id = _experiment_id(client, experiment, artifact_root if uri.startswith("sqlite:") else None)
            run = _existing_run(client, exp_id, run_id, gate_id)
            if run is None:
                run = client.create_run(exp_id, run_name=run_name, tags=pending)
            else:
                exp_id = run.info.experiment_id
                client.log_batch(run.info.run_id, tags=[RunTag(k, str(v)) for k, v in sorted(pending.items())])
            run_id = run.info.run_id
            if on_run_id:
                on_run_id(exp_id, run_id)
            import time

            now = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
            param_list = [Param(param_key(k), redact(str(v))[:6000]) for k, v in sorted(params.items())]
            metric_list = [Metric(param_key(k), float(v), now, 0) for k, v in sorted(metrics.items())]
            for i in range(0, max(len(param_list), len(metric_list)), 100):
                client.log_batch(run_id, metrics=metric_list[i:i + 100], params=param_list[i:i + 100])
            for path, dest in artifacts:
                if path.exists():
                    try:
                        client.log_artifact(run_id, str(path), artifact_path=dest)
                    except OSError as exc:  # a full or unwritable artifact store: say which file and where
                        raise InfraError(f"recording to MLflow at {display_uri(uri)} failed: cannot store {path} in "
                                         f"{run.info.artifact_uri}/{dest or ''}: {exc.strerror or exc}") from exc
            if verdict is not None:
                client.set_tag(run_id, VERDICT_TAG, verdict)
            client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
            return exp_id, run_id
        except InfraError:  # the store answers but cannot take an artifact: end the run FAILED
            _mark_failed(client, run_id)
            raise


def _mark_failed(client: MlflowClient | None, run_id: str | None) -> None:
    """Best effort: a run whose recording broke off ends FAILED, not RUNNING (`modelgate sync` completes it)."""
    if client is None or not run_id:
        return
    try:
        client.set_terminated(run_id, status="FAILED")
    except Exception:  # noqa: BLE001 - the store is failing already; the original error is the one to report
        pass


def upload(uri: str, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Upload (or replace) one artifact of an existing run."""
    from mlflow.tracking import MlflowClient

    with mlflow_errors(f"uploading {path.name} to MLflow run {run_id} failed", detail=0):
        MlflowClient(tracking_uri=uri).log_artifact(run_id, str(path), artifact_path=artifact_path)


@dataclass(frozen=True)
class RunRecord:
    """A recorded run as the rest of the code reads it (no MLflow object leaves integrations/)."""

    run_id: str
    start_ms: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    active: bool = True  # False once deleted (MLflow's lifecycle_stage "deleted")

    @classmethod
    def from_mlflow(cls, run: Run) -> RunRecord:
        return cls(run_id=run.info.run_id, start_ms=int(run.info.start_time or 0), tags=dict(run.data.tags),
                   params=dict(run.data.params), metrics=dict(run.data.metrics),
                   active=run.info.lifecycle_stage == "active")


def gate_runs(uri: str, experiment: str, model_name: str) -> list[RunRecord]:
    """Every gate run of `model_name` in `experiment` (at most 5000); [] when the experiment does not exist."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    with mlflow_errors(f"MLflow at {display_uri(uri)}: reading gate runs failed", detail=0):
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        runs = client.search_runs([exp.experiment_id], max_results=5000,
                                  filter_string=f"tags.`modelgate.kind` = 'gate' and "
                                                f"tags.`modelgate.model_name` = '{model_name}'")
    return [RunRecord.from_mlflow(r) for r in runs]
