"""MLflow's model registry: every gated candidate becomes a model version (source = the pin, never a copy
of the weights), and the production baseline is whatever the alias `production` points at.

The per-item results a gate was judged on are the artifact `items.json` of its gate run, with the digests
of the suites and evalsets they came from; the comparison stage pairs the candidate's items with them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Pin
from ..errors import InfraError
from .tracking import display_uri

ITEMS_ARTIFACT = "items.json"
REPORT_ARTIFACT = "report.json"
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


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _errors():
    from mlflow.exceptions import MlflowException

    try:
        import requests

        return (MlflowException, requests.RequestException, OSError)
    except ImportError:  # pragma: no cover
        return (MlflowException, OSError)


def version_tags(pin: Pin, run_id: str, verdict: str, digests: dict[str, str]) -> dict[str, str]:
    return {"modelgate.source": pin.source, "modelgate.repo": pin.repo, "modelgate.revision": pin.revision,
            "modelgate.files": json.dumps(pin.files, sort_keys=True), "modelgate.gate_run_id": run_id,
            "modelgate.verdict": verdict, **{f"modelgate.digest.{k}": v for k, v in digests.items()}}


def register_version(uri: str, model_name: str, pin: Pin, run_id: str, verdict: str,
                     digests: dict[str, str]) -> str:
    """Create the model version of a gated candidate; move the `candidate` alias to it. Returns the version."""
    from mlflow.exceptions import MlflowException

    try:
        client = _client(uri)
        try:
            client.get_registered_model(model_name)
        except MlflowException:
            client.create_registered_model(model_name, description="gated by modelgate")
        mv = client.create_model_version(model_name, source=pin.uri(), run_id=run_id,
                                         tags=version_tags(pin, run_id, verdict, digests),
                                         description=f"{pin.uri()} gate verdict: {verdict}")
        client.set_registered_model_alias(model_name, CANDIDATE, mv.version)
        return str(mv.version)
    except _errors() as exc:
        raise InfraError(f"registering {model_name} in MLflow at {display_uri(uri)} failed: "
                         f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc


class BaselineStore:
    """Reads the production baseline from MLflow (alias `production`)."""

    def __init__(self, uri: str):
        self.uri = uri

    def production(self, model_name: str) -> Baseline | None:
        from mlflow.exceptions import MlflowException

        client = _client(self.uri)
        try:
            mv = client.get_model_version_by_alias(model_name, PRODUCTION)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                return None
            raise InfraError(f"reading alias {PRODUCTION!r} of {model_name}: {exc}") from exc
        except _errors() as exc:
            raise InfraError(f"MLflow at {display_uri(self.uri)} unreachable while reading the baseline: "
                             f"{type(exc).__name__}") from exc
        tags = mv.tags or {}
        try:
            pin = Pin(source=tags["modelgate.source"], repo=tags["modelgate.repo"],
                      revision=tags["modelgate.revision"], files=json.loads(tags["modelgate.files"]))
        except (KeyError, ValueError) as exc:
            raise InfraError(f"model version {model_name} v{mv.version} (alias {PRODUCTION}) was not registered "
                             f"by modelgate: tag {exc} missing or invalid") from exc
        digests = {k.removeprefix("modelgate.digest."): v for k, v in tags.items()
                   if k.startswith("modelgate.digest.")}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(mv.run_id, ITEMS_ARTIFACT, tmp)
                items = json.loads(Path(path).read_text())["items"]
        except _errors() as exc:
            raise InfraError(f"cannot read {ITEMS_ARTIFACT} of the production gate run {mv.run_id}: "
                             f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from exc
        return Baseline(version=str(mv.version), run_id=mv.run_id, pin=pin, digests=digests, items=items,
                        load=_load_details(client, mv.run_id))


def _load_details(client, run_id: str) -> dict[str, Any] | None:
    """The baseline gate's load-test results from its report.json; None when absent or unreadable (older
    gates, load test skipped): the load comparison is then skipped, never the gate."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report = json.loads(Path(client.download_artifacts(run_id, REPORT_ARTIFACT, tmp)).read_text())
    except (*_errors(), ValueError):
        return None
    stage = next((s for s in report.get("stages", []) if s.get("name") == "load"), None)
    if not stage or stage.get("status") not in ("passed", "failed") or not stage.get("details", {}).get("levels"):
        return None
    return stage["details"]


def items_document(items: dict[str, dict[str, float]], digests: dict[str, str]) -> dict[str, Any]:
    return {"schema_version": 1, "digests": digests, "items": items}
