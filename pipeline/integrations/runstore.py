"""Runs of one MLflow experiment as plain records: what the audit trail (and claims) read and write.

The releasing code keeps the meaning of its runs (events, states, steps); this module keeps MLflow: the client,
its pagination and its errors (mapped to InfraError once, in mlflow_errors), so no MLflow object leaves
integrations/.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.integrations.mlflow_errors import mlflow_errors
from pipeline.integrations.tracking import RunRecord, display_uri

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlflow.tracking import MlflowClient


class RunStore:
    """One experiment's runs, created on first write (with the embedded store, its artifacts under
    `artifact_root`)."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.experiment = experiment
        self.artifact_root = artifact_root
        self.client: MlflowClient = MlflowClient(tracking_uri=uri)
        self._exp_id: str | None = None

    def _guard(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with mlflow_errors(f"MLflow at {display_uri(self.uri)}: {what} failed", detail=200):
            return fn(*args, **kwargs)

    def experiment_id(self, create: bool = True) -> str | None:
        if self._exp_id is None:
            exp = self._guard(f"reading the experiment {self.experiment!r}", self.client.get_experiment_by_name,
                              self.experiment)
            if exp is not None:
                self._exp_id = exp.experiment_id
            elif create:
                local = self.artifact_root is not None and self.uri.startswith("sqlite:")
                location = self.artifact_root.resolve().as_uri() if local and self.artifact_root else None
                self._exp_id = self._guard(f"creating the experiment {self.experiment!r}",
                                           self.client.create_experiment, self.experiment,
                                           artifact_location=location)
        return self._exp_id

    def create(self, what: str, run_name: str, tags: dict[str, str], *, finished: bool) -> RunRecord:
        """A new run with `tags`; `finished` ends it at once (FINISHED)."""
        run = self._guard(what, self.client.create_run, self.experiment_id(), run_name=run_name, tags=tags)
        if finished:
            self._guard(what, self.client.set_terminated, run.info.run_id, "FINISHED")
        return self.get(what, run.info.run_id)

    def set_tag(self, what: str, run_id: str, key: str, value: str) -> None:
        self._guard(what, self.client.set_tag, run_id, key, value)

    def set_tags(self, what: str, run_id: str, tags: dict[str, str]) -> None:
        """Several tags in one request (MLflow's log-batch: the tracking store writes them together)."""
        from mlflow.entities import RunTag

        self._guard(what, self.client.log_batch, run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_text(self, what: str, run_id: str, text: str, artifact_file: str) -> None:
        """A text artifact on the run (artifacts and metrics are outside an audit run's seal, which covers tags)."""
        self._guard(what, self.client.log_text, run_id, text, artifact_file)

    def log_metrics(self, what: str, run_id: str, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._guard(what, self.client.log_batch, run_id,
                    metrics=[Metric(k, v, stamp, 0) for k, v in metrics.items()])

    def terminate(self, what: str, run_id: str, status: str) -> None:
        self._guard(what, self.client.set_terminated, run_id, status)

    def get(self, what: str, run_id: str) -> RunRecord:
        return RunRecord.from_mlflow(self._guard(what, self.client.get_run, run_id))

    def search(self, what: str, filter_string: str, *, deleted: bool = False) -> list[RunRecord]:
        """Every matching run, oldest first (all pages); [] when the experiment does not exist yet. `deleted`: the
        deleted runs instead of the active ones."""
        from mlflow.entities import ViewType

        exp_id = self.experiment_id(create=False)
        if exp_id is None:
            return []
        runs: list[RunRecord] = []
        token = None
        while True:
            page = self._guard(what, self.client.search_runs, [exp_id], filter_string=filter_string,
                               run_view_type=ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY,
                               max_results=1000, page_token=token, order_by=["attributes.start_time ASC"])
            runs.extend(RunRecord.from_mlflow(r) for r in page)
            token = page.token
            if not token:
                return runs
