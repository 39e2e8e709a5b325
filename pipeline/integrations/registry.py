"""MLflow's model registry: every gated candidate becomes a model version (source = the pin, never a copy
of the weights), and the production baseline is whatever the alias `production` points at.

The per-item results a gate was judged on are the artifact `items.json` of its gate run, with the digests
of the suites and evalsets they came from; the comparison stage pairs the candidate's items with them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.config.release import Pin, pin_source
from pipeline.errors import InfraError
from pipeline.gate.result import Status
from pipeline.gate.rundir import ITEMS_FILE, REPORT_FILE
from pipeline.integrations.mlflow_errors import error_types, is_not_found, mlflow_errors
from pipeline.integrations.tracking import RunRecord, display_uri

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion as MlflowModelVersion
    from mlflow.tracking import MlflowClient

T = TypeVar("T")

PRODUCTION = "production"
CANDIDATE = "candidate"


@dataclass(frozen=True)
class Baseline:
    version: str
    run_id: str
    pin: Pin
    digests: dict[str, str]
    items: dict[str, dict[str, float]]
    load: dict[str, Any] | None = None  # the `load` stage details of its gate report (None: not recorded)


def _client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def version_tags(pin: Pin, run_id: str, verdict: str, digests: dict[str, str], author: str = "unknown",
                 baseline_version: str | None = None) -> dict[str, str]:
    return {"modelgate.source": pin.source, "modelgate.repo": pin.repo, "modelgate.revision": pin.revision,
            "modelgate.files": json.dumps(pin.files, sort_keys=True), "modelgate.gate_run_id": run_id,
            "modelgate.verdict": verdict, "modelgate.author": author,
            "modelgate.baseline_version": baseline_version or "",
            "modelgate.gate_kind": "release",  # only a release gate registers a version
            **{f"modelgate.digest.{k}": v for k, v in digests.items()}}


PRODUCTION_LINE = "\n\nProduction: "


def model_description(current: str | None, *, about: str | None = None, production: str | None = None) -> str:
    """The registered model's description: what the model is (release.yaml model.description), then
    "Production: v4 since <when> (<event> by <who>: <why>)". Either part is kept when not given."""
    text = current or ""
    head, _, tail = text.partition(PRODUCTION_LINE)
    head = (about or head or "gated by modelgate").strip()
    return head + (PRODUCTION_LINE + production if production else (PRODUCTION_LINE + tail if tail else ""))


def register_version(uri: str, model_name: str, pin: Pin, run_id: str, verdict: str,
                     digests: dict[str, str], author: str = "unknown", baseline_version: str | None = None,
                     description: str | None = None, about: str | None = None) -> str:
    """Create the model version of a gated candidate; move the `candidate` alias to it. Returns the version.
    `description` is the version's first line (views.decision_line: the verdict and the deltas that decided it),
    `about` what the model is (the registered model's description). Resumable: a version already created from
    `run_id` (a record interrupted after it) is reused, not doubled."""
    from mlflow.exceptions import MlflowException

    with mlflow_errors(f"registering {model_name} in MLflow at {display_uri(uri)} failed"):
        client = _client(uri)
        try:
            current = client.get_registered_model(model_name).description
            if about and model_description(current, about=about) != (current or ""):
                client.update_registered_model(model_name, description=model_description(current, about=about))
        except MlflowException:
            client.create_registered_model(model_name, description=model_description(None, about=about))
        mv = version_of_run(client, model_name, run_id)
        if mv is None:
            mv = client.create_model_version(model_name, source=pin.uri(), run_id=run_id,
                                             tags=version_tags(pin, run_id, verdict, digests, author,
                                                               baseline_version),
                                             description=(description or f"gate verdict: {verdict}") +
                                             f"\n\nsource {pin.uri()} · author {author}")
        client.set_registered_model_alias(model_name, CANDIDATE, mv.version)
        return str(mv.version)


def version_of_run(client: MlflowClient, model_name: str, run_id: str) -> MlflowModelVersion | None:
    """The model version registered from gate run `run_id`, or None."""
    found = client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    return min(found, key=lambda mv: int(mv.version)) if found else None


class BaselineStore:
    """Reads the production baseline from MLflow (alias `production`)."""

    def __init__(self, uri: str):
        self.uri = uri

    def production(self, model_name: str) -> Baseline | None:
        registry = Registry(self.uri)
        mv = registry.by_alias(model_name, PRODUCTION)
        if mv is None:
            return None
        if mv.run_id is None:
            raise InfraError(f"model version {model_name} v{mv.version} (alias {PRODUCTION}) was not registered "
                             "by modelgate: it names no gate run")
        client = registry.client
        tags = mv.tags
        try:
            pin = Pin(source=pin_source(tags["modelgate.source"]), repo=tags["modelgate.repo"],
                      revision=tags["modelgate.revision"], files=json.loads(tags["modelgate.files"]))
        except (KeyError, ValueError) as exc:
            raise InfraError(f"model version {model_name} v{mv.version} (alias {PRODUCTION}) was not registered "
                             f"by modelgate: tag {exc} missing or invalid") from exc
        digests = {k.removeprefix("modelgate.digest."): v for k, v in tags.items()
                   if k.startswith("modelgate.digest.")}
        with mlflow_errors(f"cannot read {ITEMS_FILE} of the production gate run {mv.run_id}", detail=200), \
                tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(mv.run_id, ITEMS_FILE, tmp)
            items = json.loads(Path(path).read_text())["items"]
        return Baseline(version=str(mv.version), run_id=mv.run_id, pin=pin, digests=digests, items=items,
                        load=_load_details(client, mv.run_id))


def _load_details(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    """The baseline gate's load-test results from its report.json; None when absent or unreadable (older
    gates, load test skipped): the load comparison is then skipped, never the gate."""
    from pipeline.report.document import GateReport

    unreadable: tuple[type[BaseException], ...] = (*error_types(), ValueError, InfraError)
    try:  # not JSON or not a gate report (ValueError), another schema version (InfraError)
        with tempfile.TemporaryDirectory() as tmp:
            report = GateReport.load(Path(client.download_artifacts(run_id, REPORT_FILE, tmp)))
    except unreadable:
        return None
    stage = report.stage("load")
    if not stage or stage.status not in (Status.PASSED, Status.FAILED) or not stage.details.get("levels"):
        return None
    return stage.details


def items_document(items: dict[str, dict[str, float]], digests: dict[str, str]) -> dict[str, Any]:
    return {"schema_version": 1, "digests": digests, "items": items}


PREVIOUS = "previous"


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version as the promotion code needs it."""

    model_name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created_ms: int

    @property
    def verdict(self) -> str:
        return self.tags.get("modelgate.verdict", "unknown")

    @property
    def revision(self) -> str:
        return self.tags.get("modelgate.revision", "")


def _to_version(mv: MlflowModelVersion) -> ModelVersion:
    return ModelVersion(model_name=mv.name, version=str(mv.version), run_id=mv.run_id, source=mv.source or "",
                        tags=dict(mv.tags or {}), aliases=tuple(getattr(mv, "aliases", None) or ()),
                        created_ms=int(mv.creation_timestamp or 0))


class Registry:
    """The MLflow model registry calls promotion, rollback and history make, with MLflow's exceptions mapped:
    a missing version/alias is None, anything else is an InfraError."""

    def __init__(self, uri: str):
        self.uri = uri
        self.client = _client(uri)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, missing_ok: bool = False, **kwargs: Any) -> T | None:
        from mlflow.exceptions import MlflowException

        with mlflow_errors(f"MLflow at {display_uri(self.uri)}: {what} failed"):
            try:
                return fn(*args, **kwargs)
            except MlflowException as exc:
                if missing_ok and is_not_found(exc):
                    return None
                raise

    def model_exists(self, name: str) -> bool:
        return self._call(f"reading model {name}", self.client.get_registered_model, name, missing_ok=True) is not None

    def version(self, name: str, version: str) -> ModelVersion | None:
        mv = self._call(f"reading {name} v{version}", self.client.get_model_version, name, str(version),
                        missing_ok=True)
        return _to_version(mv) if mv is not None else None

    def by_alias(self, name: str, alias: str) -> ModelVersion | None:
        mv = self._call(f"reading alias {alias!r} of {name}", self.client.get_model_version_by_alias, name, alias,
                        missing_ok=True)
        return _to_version(mv) if mv is not None else None

    def versions(self, name: str) -> list[ModelVersion]:
        found = self._call(f"listing versions of {name}", self.client.search_model_versions, f"name='{name}'")
        return sorted((_to_version(mv) for mv in found or []), key=lambda v: int(v.version))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(f"moving alias {alias!r} of {name} to v{version}", self.client.set_registered_model_alias,
                   name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        self._call(f"deleting alias {alias!r} of {name}", self.client.delete_registered_model_alias, name, alias,
                   missing_ok=True)

    def add_version_line(self, name: str, version: str, line: str) -> None:
        """Append one line (an approval, promotion or rollback: who, when, why) to a version's description."""
        mv = self._call(f"reading {name} v{version}", self.client.get_model_version, name, str(version))
        text = ((mv.description or "") if mv is not None else "").rstrip()
        if line in text.splitlines():
            return  # resumed operation: written once
        self._call(f"describing {name} v{version}", self.client.update_model_version, name, str(version),
                   description=f"{text}\n\n{line}" if text else line)

    def set_production_line(self, name: str, line: str) -> None:
        """The registered model's description says which version is production, since when and why."""
        model = self._call(f"reading model {name}", self.client.get_registered_model, name)
        current = model.description if model is not None else ""
        self._call(f"describing model {name}", self.client.update_registered_model, name,
                   description=model_description(current, production=line))

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call(f"tagging {name} v{version}", self.client.set_model_version_tag, name, str(version), key, value)

    def run(self, run_id: str) -> RunRecord | None:
        """The run, typed; None when it does not exist."""
        run = self._call(f"reading run {run_id}", self.client.get_run, run_id, missing_ok=True)
        return RunRecord.from_mlflow(run) if run is not None else None

    def artifact(self, run_id: str, path: str) -> bytes | None:
        """The bytes of one artifact of the run; None when the run has no such artifact."""
        from mlflow.exceptions import MlflowException

        with mlflow_errors(f"MLflow at {display_uri(self.uri)}: reading {path} of run {run_id} failed"), \
                tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, path, tmp)
            except (MlflowException, OSError) as exc:
                if isinstance(exc, OSError) or is_not_found(exc) or "No such file" in str(exc):
                    return None
                raise
            file = Path(local)
            return file.read_bytes() if file.is_file() else None

    def metric_history(self, run_id: str, key: str) -> list[float]:
        """Every value ever logged for metric `key` of the run (a metric can be logged again; a param cannot)."""
        found = self._call(f"reading metric {key} of run {run_id}", self.client.get_metric_history, run_id, key)
        return [float(m.value) for m in found or []]
