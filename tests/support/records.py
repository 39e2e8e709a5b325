"""A model version's full record as tests read and tamper with it: the gate run's artifact version.json, and the
layout versions had before it (every value a `modelgate.*` version tag, the signature too), which stores still
hold and promotion still reads."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from pipeline.config.release import Pin
from pipeline.integrations.registry import VERSION_FILE


def version_record(uri: str, model: str, version: str) -> dict[str, Any]:
    """version.json of the version's gate run."""
    client = MlflowClient(tracking_uri=uri)
    run_id = client.get_model_version(model, version).run_id
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, VERSION_FILE, tmp)).read_text())


def rewrite_record(uri: str, model: str, version: str, **changes: Any) -> None:
    """Overwrite version.json of the version's gate run (what anyone with EDIT on the experiment can do)."""
    client = MlflowClient(tracking_uri=uri)
    run_id = client.get_model_version(model, version).run_id
    doc = {**version_record(uri, model, version), **changes}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / VERSION_FILE
        path.write_text(json.dumps(doc))
        client.log_artifact(run_id, str(path))


def legacy_tags(pin: Pin, run_id: str, verdict: str, digests: dict[str, str], author: str = "unknown",
                baseline_version: str | None = None, gate_kind: str = "release") -> dict[str, str]:
    """The tags a version was registered with before version.json existed (pipeline/integrations/registry.py
    then): the pin with its file digests as JSON, each digest, the author, the gate kind."""
    return {"modelgate.source": pin.source, "modelgate.repo": pin.repo, "modelgate.revision": pin.revision,
            "modelgate.files": json.dumps(pin.files, sort_keys=True), "modelgate.gate_run_id": run_id,
            "modelgate.verdict": verdict, "modelgate.author": author,
            "modelgate.baseline_version": baseline_version or "", "modelgate.gate_kind": gate_kind,
            **{f"modelgate.digest.{k}": v for k, v in digests.items()}}


def to_legacy_layout(uri: str, model: str, version: str) -> None:
    """Turn a freshly gated version into one registered before version.json: its record and signature become its
    tags, and version.json is deleted from the gate run (through the server's artifact proxy)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from pipeline.config.release import pin_source

    client = MlflowClient(tracking_uri=uri)
    mv = client.get_model_version(model, version)
    doc = version_record(uri, model, version)
    pin = Pin(source=pin_source(doc["source"]), repo=doc["repo"], revision=doc["revision"], files=doc["files"])
    tags = legacy_tags(pin, mv.run_id, mv.tags["modelgate.verdict"], doc["digests"], doc["author"],
                       doc["baseline_version"], doc["gate_kind"])
    with tempfile.TemporaryDirectory() as tmp:
        sig = Path(client.download_artifacts(mv.run_id, "signature/statement.sig", tmp)).read_text().strip()
        stmt = json.loads(Path(client.download_artifacts(mv.run_id, "signature/statement.json", tmp)).read_text())
    tags.update({"modelgate.signature": sig, "modelgate.signature.key_id": stmt["key_id"],
                 "modelgate.signature.signed_at": stmt["signed_at"]})
    for key, value in tags.items():
        client.set_model_version_tag(model, version, key, value)
    get_artifact_repository(client.get_run(mv.run_id).info.artifact_uri).delete_artifacts(VERSION_FILE)
    assert VERSION_FILE not in [a.path for a in client.list_artifacts(mv.run_id)]
