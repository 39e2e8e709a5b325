"""release.yaml as written: `ReleaseFile` and its top-level sections, the one typed model of the file.

The JSON Schema (schemas/release.schema.json) and the configuration reference (docs/configuration.md) are
generated from it (`python -m pipeline.config.schema`); config/release.py builds the `Release` the code reads
from a validated `ReleaseFile`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from pipeline.config.fields import SECTION, UNIQUE, Absent, EnvName, HttpUrl, Text, doc
from pipeline.config.gates import AdvisorySample, EvalsGate, FormatGate, ReplayGate
from pipeline.config.load_gate import LoadGate
from pipeline.config.pin import Pin
from pipeline.config.serving import Serving
from pipeline.config.watch import AutoRollback, Watch


@dataclass(frozen=True)
class ModelSection:
    """`model`: what is released."""

    __pydantic_config__ = SECTION

    name: Annotated[str, doc("registered model name in MLflow", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
    served_name_prefix: Annotated[str, doc("the served model name is <prefix>@<first 12 of the revision>",
                                           pattern=r"^[A-Za-z0-9._-]{1,40}$")] = "chat"
    description: Annotated[str | Absent, doc(
        "what the model is, for people: the first paragraph of the registered model's description in "
        "MLflow")] = None


@dataclass(frozen=True)
class Security:
    """`security`: what the candidate may run and which values never appear in logs and reports."""

    __pydantic_config__ = SECTION

    remote_code_allowlist: Annotated[tuple[Text, ...], UNIQUE, doc(
        "model repos whose own code may run (candidate.trust_remote_code)")] = ()
    secret_env: Annotated[tuple[EnvName, ...], doc(
        "more environment variables whose values are redacted (beside the usual tokens and keys)")] = ()


@dataclass(frozen=True)
class Advisory:
    """`gates.advisory`: the advisory (pull request) gate's smaller profile; the release gate always runs
    everything."""

    __pydantic_config__ = SECTION

    sample: AdvisorySample = AdvisorySample()


@dataclass(frozen=True)
class Gates:
    """`gates`: what the candidate must pass. A gate without its section does not run."""

    __pydantic_config__ = SECTION

    format: FormatGate | Absent = None
    evals: EvalsGate | Absent = None
    load: LoadGate | Absent = None
    alpha: Annotated[float, doc("1 - the confidence of every comparison with production", gt=0, le=0.5)] = 0.05
    advisory: Advisory = Advisory()
    replay: ReplayGate | Absent = None


@dataclass(frozen=True)
class Tracking:
    """`tracking`: where gates are recorded in MLflow."""

    __pydantic_config__ = SECTION

    experiment: Annotated[Text | Absent, doc("the release gates' experiment (default: modelgate/<model.name>)")] = \
        None
    uri: Annotated[Text | Absent, doc("the tracking server, unless --tracking-uri or MLFLOW_TRACKING_URI says "
                                       "otherwise (default: mlflow/mlflow.db beside release.yaml)")] = None
    advisory_experiment: Annotated[Text | Absent, doc(
        "where advisory (pull request) gates are recorded (default: <experiment>/advisory); never "
        "promotable")] = None


@dataclass(frozen=True)
class GitHubTarget:
    """`promotion.github`: the GitHub deployment a promotion records."""

    __pydantic_config__ = SECTION

    repository: Annotated[str, doc("owner/name", pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")]
    api_url: Annotated[HttpUrl, doc("GitHub Enterprise: https://HOST/api/v3")] = "https://api.github.com"
    environment: Annotated[Text, doc("the deployment environment")] = "production"
    environment_url: Annotated[str | Absent, doc("the environment's URL shown on the deployment")] = None


@dataclass(frozen=True)
class PromotionPolicy:
    """`promotion`: who may release, and where a promotion is recorded besides MLflow. Without release managers
    nobody can approve or promote."""

    __pydantic_config__ = SECTION

    release_managers: Annotated[tuple[Annotated[str, Field(min_length=1, pattern=r"^\S+$")], ...], UNIQUE, doc(
        "identities (GitHub logins or emails) allowed to approve, promote and roll back")] = ()
    approvals_required: Annotated[int, doc("approvals a promotion needs", ge=0, le=10)] = 1
    tag_format: Annotated[str, doc("git tag name; {model} and {version} are filled in",
                                   pattern=r"\{version\}")] = "{model}/v{version}"
    git_remote: Annotated[Text | None, doc("push the version tag to this remote (null: local tag only)")] = None
    audit_experiment: Annotated[Text | Absent, doc("where audit events are recorded (default: <tracking "
                                                   "experiment>/audit)")] = None
    github: GitHubTarget | Absent = None
    auto_rollback: AutoRollback = AutoRollback()

    def is_manager(self, identity: str) -> bool:
        return identity.casefold() in {m.casefold() for m in self.release_managers}


@dataclass(frozen=True)
class PublicKeyEntry:
    """One trusted Ed25519 public key with its validity window (`modelgate keygen` prints the entry)."""

    __pydantic_config__ = SECTION

    id: Annotated[str, doc("derived from the key (modelgate keygen prints it)", pattern=r"^ed25519:[0-9a-f]{16}$")]
    public_key: Annotated[Text, doc("PEM, or base64 of the 32 raw bytes")]
    not_before: Annotated[Any, doc("ISO 8601 date or time (UTC unless stated): signatures made before it do not "
                                   "verify")]
    not_after: Annotated[Any, doc("ISO 8601 date or time, or null (no end): signatures made after it do not "
                                  "verify")] = None
    scope: Annotated[Literal["any", "watch"], doc(
        "audit_keys only: `watch` for the production-watch environment's key (promotion.auto_rollback): its seal "
        "counts only on a rollback by modelgate-watch, never on an approval, a promotion or another actor's "
        "event")] = "any"


@dataclass(frozen=True)
class Signing:
    """`signing`: who may sign: release gate records (public_keys: the release-gate environment's keys) and audit
    events (audit_keys: the production environment's keys that seal approvals, promotions, rollbacks and
    readiness checks); Ed25519 public keys with validity windows (rotation)."""

    __pydantic_config__ = SECTION

    public_keys: Annotated[tuple[PublicKeyEntry, ...], doc(
        "keys that sign a promotable (release) gate record (MODELGATE_SIGNING_KEY)")] = ()
    audit_keys: Annotated[tuple[PublicKeyEntry, ...], doc(
        "keys that seal audit events (MODELGATE_AUDIT_KEY, held only by the production environment); same entry "
        "format as public_keys")] = ()


@dataclass(frozen=True)
class ReleaseFile:
    """release.yaml: what is released, how it is served, the gates it must pass, where it is recorded, who may
    release it."""

    __pydantic_config__ = SECTION

    schema_version: Annotated[Literal[1], doc("the version of this format")]
    model: ModelSection
    candidate: Annotated[Pin, doc("the pinned candidate: an exact commit and the sha256 of every file")]
    security: Security = Security()
    serving: Serving = Serving()
    gates: Gates = Gates()
    tracking: Tracking = Tracking()
    promotion: PromotionPolicy = PromotionPolicy()
    signing: Signing = Signing()
    watch: Watch = Watch()
