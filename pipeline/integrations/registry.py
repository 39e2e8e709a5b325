"""MLflow's model registry: every gated candidate becomes a model version (source = the pin, never a copy
of the weights), and the production baseline is whatever the alias `production` points at.

The per-item results a gate was judged on are the artifact `items.json` of its gate run, with the digests
of the suites and evalsets they came from; the comparison stage pairs the candidate's items with them.

A version's tags are few and short (verdict, revision, gate run, baseline version; the signature status): what
an auditor scans in MLflow's versions table. Its full record (the pin with every file's sha256, the digests,
author, gate kind) is the gate run's artifact `version.json`, which MLflow previews, and the same values are
the run's params (written once); promotion compares the three (releasing/policy.py). Versions registered
before version.json held it all as `modelgate.*` tags: `Registry.record` still reads them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.config.release import Pin, pin_source
from pipeline.core import tags as tagnames
from pipeline.core.result import Status
from pipeline.core.rundir import ITEMS_FILE, REPORT_FILE
from pipeline.errors import InfraError
from pipeline.integrations.mlflow_errors import is_not_found, mlflow_errors
from pipeline.integrations.tracking import RunRecord, display_uri
from pipeline.report.document import SCHEMA_VERSION, GateReport

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
    items_sha256: str = ""  # of the items.json bytes read (the signed statement names the one its gate signed)
    replay_answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # its replay answers, by request hash
    report_sha256: str | None = None  # of the report.json bytes read (None: the run holds none)
    verified: str = ""  # what was verified of it (releasing/chain.py), shown in the report


def _client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


VERSION_FILE = "version.json"  # the gate run's artifact: everything the model version was registered with
# A version's own tags: few and short, what an auditor scans in the versions table. The rest (every file's sha256,
# the suite/evalset/config digests, the author) is the gate run's artifact version.json and its params.
VERDICT_TAG, REVISION_TAG = tagnames.VERDICT, tagnames.REVISION
RUN_TAG, BASELINE_TAG = tagnames.GATE_RUN_ID, tagnames.BASELINE_VERSION
LEGACY_FILES_TAG = tagnames.LEGACY_FILES  # versions registered before version.json carried the whole record as tags


def version_tags(pin: Pin, run_id: str, verdict: str, baseline_version: str | None = None) -> dict[str, str]:
    return {VERDICT_TAG: verdict, REVISION_TAG: pin.revision, RUN_TAG: run_id, BASELINE_TAG: baseline_version or ""}


def version_document(model_name: str, pin: Pin, digests: dict[str, str], author: str, baseline_version: str | None,
                     gate_kind: str) -> dict[str, Any]:
    """version.json: what the model version is (the pin with every file's sha256) and what its gate judged it
    against (digests of suites, evalsets and config, the production version), by whom."""
    return {"schema_version": 1, "model_name": model_name, "source": pin.source, "repo": pin.repo,
            "revision": pin.revision, "files": dict(sorted(pin.files.items())),
            "digests": dict(sorted(digests.items())), "author": author, "baseline_version": baseline_version or "",
            "gate_kind": gate_kind}


@dataclass(frozen=True)
class VersionRecord:
    """What a model version was gated on, in full. `layout`: "artifact" (the gate run's version.json) or "tags"
    (a version registered before it: every value was a `modelgate.*` version tag)."""

    pin: Pin
    digests: dict[str, str]
    author: str
    baseline_version: str
    gate_kind: str
    layout: str

    @classmethod
    def from_document(cls, doc: Any) -> VersionRecord:
        """ValueError (what is wrong) unless `doc` is a version.json document."""
        if not isinstance(doc, dict) or doc.get("schema_version") != 1:
            raise ValueError("not a version.json document of schema_version 1")
        try:
            files, digests = doc["files"], doc["digests"]
            if not isinstance(files, dict) or not isinstance(digests, dict):
                raise ValueError("files and digests must be objects")
            pin = Pin(source=pin_source(str(doc["source"])), repo=str(doc["repo"]), revision=str(doc["revision"]),
                      files={str(k): str(v) for k, v in files.items()})
            return cls(pin, {str(k): str(v) for k, v in digests.items()}, str(doc["author"]),
                       str(doc["baseline_version"]), str(doc["gate_kind"]), "artifact")
        except KeyError as exc:
            raise ValueError(f"field {exc} missing") from None

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> VersionRecord:
        """A version registered before version.json existed (its tags held everything). ValueError if incomplete."""
        try:
            files = json.loads(tags[LEGACY_FILES_TAG])
            if not isinstance(files, dict):
                raise ValueError(f"tag {LEGACY_FILES_TAG} is not a JSON object")
            pin = Pin(source=pin_source(tags[tagnames.SOURCE]), repo=tags[tagnames.REPO],
                      revision=tags[REVISION_TAG], files=files)
        except KeyError as exc:
            raise ValueError(f"tag {exc} missing") from None
        except ValueError as exc:
            raise ValueError(f"tag invalid: {exc}") from None
        digest = tagnames.DIGEST_PREFIX
        digests = {k.removeprefix(digest): v for k, v in tags.items() if k.startswith(digest)}
        return cls(pin, digests, tags.get(tagnames.AUTHOR, "unknown"), tags.get(BASELINE_TAG, ""),
                   tags.get(tagnames.GATE_KIND, "release"), "tags")


PRODUCTION_LINE = "\n\nProduction: "


def model_description(current: str | None, *, about: str | None = None, production: str | None = None) -> str:
    """The registered model's description: what the model is (release.yaml model.description), then
    "Production: v4 since <when> (<event> by <who>: <why>)". Either part is kept when not given."""
    text = current or ""
    head, _, tail = text.partition(PRODUCTION_LINE)
    head = (about or head or "gated by modelgate").strip()
    return head + (PRODUCTION_LINE + production if production else (PRODUCTION_LINE + tail if tail else ""))


def register_version(uri: str, model_name: str, pin: Pin, run_id: str, verdict: str, author: str = "unknown",
                     baseline_version: str | None = None, description: str | None = None,
                     about: str | None = None) -> str:
    """Create the model version of a gated candidate; move the `candidate` alias to it. Returns the version.
    Its few short tags are `version_tags`; the full record is the gate run's version.json (logged before).
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
                                             tags=version_tags(pin, run_id, verdict, baseline_version),
                                             description=(description or f"gate verdict: {verdict}") +
                                             f"\n\nsource {pin.uri()} · author {author}")
        client.set_registered_model_alias(model_name, CANDIDATE, mv.version)
        return str(mv.version)


def version_of_run(client: MlflowClient, model_name: str, run_id: str) -> MlflowModelVersion | None:
    """The model version registered from gate run `run_id`, or None."""
    found = client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    return min(found, key=lambda mv: int(mv.version)) if found else None


# (registry, production version) -> the check of the baseline read from it (raises when it does not verify)
BaselineCheck = Callable[[Baseline], Baseline]
BaselineVerifier = Callable[["Registry", "ModelVersion"], BaselineCheck]


class BaselineStore:
    """Reads the production baseline from MLflow (alias `production`). `verify` (releasing/chain.py) is asked
    about the version before anything of it is read, and checks the bytes read (items.json, report.json) after."""

    def __init__(self, uri: str, verify: BaselineVerifier | None = None):
        self.uri = uri
        self.verify = verify

    def production(self, model_name: str) -> Baseline | None:
        registry = Registry(self.uri)
        mv = registry.by_alias(model_name, PRODUCTION)
        if mv is None:
            return None
        check = self.verify(registry, mv) if self.verify is not None else None
        if mv.run_id is None:
            raise InfraError(f"model version {model_name} v{mv.version} (alias {PRODUCTION}) was not registered "
                             "by modelgate: it names no gate run")
        try:
            record = registry.record(mv)
        except ValueError as exc:
            raise InfraError(f"model version {model_name} v{mv.version} (alias {PRODUCTION}): its record is "
                             f"unreadable: {exc}") from exc
        if record is None:
            raise InfraError(f"model version {model_name} v{mv.version} (alias {PRODUCTION}) was not registered "
                             f"by modelgate: its gate run holds no {VERSION_FILE} and it has no {LEGACY_FILES_TAG} tag")
        raw = registry.artifact(mv.run_id, ITEMS_FILE)
        if raw is None:
            raise InfraError(f"cannot read {ITEMS_FILE} of the production gate run {mv.run_id}: it holds none")
        try:
            doc = json.loads(raw)
            items, replay_answers = doc["items"], dict(doc.get("replay_answers") or {})
        except (ValueError, KeyError, TypeError) as exc:
            raise InfraError(f"{ITEMS_FILE} of the production gate run {mv.run_id} is unreadable: {exc}") from exc
        report = registry.artifact(mv.run_id, REPORT_FILE)
        baseline = Baseline(version=str(mv.version), run_id=mv.run_id, pin=record.pin, digests=record.digests,
                            items=items, load=_load_details(report),
                            items_sha256=hashlib.sha256(raw).hexdigest(), replay_answers=replay_answers,
                            report_sha256=hashlib.sha256(report).hexdigest() if report is not None else None)
        return check(baseline) if check is not None else baseline


def _load_details(raw: bytes | None) -> dict[str, Any] | None:
    """The baseline gate's load-test results from its report.json; None when absent or unreadable (older
    gates, load test skipped): the load comparison is then skipped, never the gate."""
    if raw is None:
        return None
    try:  # not JSON or not a gate report (ValueError: MalformedReport is one), another schema version
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            return None
        report = GateReport.from_dict(data)
    except ValueError:
        return None
    stage = report.stage("load")
    if not stage or stage.status not in (Status.PASSED, Status.FAILED) or not (
            stage.details.get("levels") or stage.details.get("rate_levels")):
        return None
    return stage.details


def items_document(items: dict[str, dict[str, float]], digests: dict[str, str],
                   replay_answers: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """items.json: the per-item results, their digests, and the replay answers (by request hash, scrubbed), all
    covered by the gate's signature (items_sha256)."""
    return {"schema_version": 1, "digests": digests, "items": items,
            **({"replay_answers": replay_answers} if replay_answers else {})}


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
        return self.tags.get(VERDICT_TAG, "unknown")

    @property
    def revision(self) -> str:
        return self.tags.get(REVISION_TAG, "")


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
        self._records: dict[tuple[str, str], VersionRecord | None] = {}

    def record(self, mv: ModelVersion) -> VersionRecord | None:
        """What the version was gated on: its gate run's version.json, else (a version registered before it
        existed) its legacy tags; None when neither is there. ValueError when the one found is invalid.
        Read once per Registry, so one operation's checks and steps all see the same record."""
        key = (mv.model_name, mv.version)
        if key not in self._records:
            raw = self.artifact(mv.run_id, VERSION_FILE) if mv.run_id else None
            if raw is not None:
                try:
                    doc = json.loads(raw)
                except ValueError:
                    raise ValueError(f"{VERSION_FILE} of gate run {mv.run_id} is not JSON") from None
                self._records[key] = VersionRecord.from_document(doc)
            else:
                self._records[key] = VersionRecord.from_tags(mv.tags) if LEGACY_FILES_TAG in mv.tags else None
        return self._records[key]

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
