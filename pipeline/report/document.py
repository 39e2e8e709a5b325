"""The gate report: one typed, versioned document, the single source of truth.

`GateReport` is what a gate judged and how it was recorded; it saves itself as report.json and loads from
it (the one loader). The console summary, the markdown (PR comment), the HTML page, MLflow's
params/metrics/artifacts and `modelgate report` are all renderings of it. The JSON keeps the shape of
schema_version 1; `schema_version` changes when a field changes meaning. Fields added since the first
reports (`baseline_version`, `source_control.author`) stay absent when a report that lacked them is
re-saved, so every report ever written loads and saves back the same. Stage details are kept as written: the
compare stage's metric rows gained `kind` and the sensitivity (`mde`, `power`, `underpowered`, `discordance` or
`sd_diff`, `items_needed`) without a schema change; the renderings show "-" where an older row lacks them. The load
stage's details gained the request-rate levels (`rate_levels`), each level's goodput and the knee search (`knee`)
the same way; `GateReport.load_results()` reads them typed (`LoadResults`), empty for older reports. The replay
stage's `per_check` entries gained each check's power (`production_passes`, `mde`, `break_power`, `flag`) and its
metric rows `power_flag`, read typed as `checks.replay_power.CheckPower` (views.replay_powers); older reports show
production's pass rate and no flag.

    report = GateReport.load(run_dir / "report.json")   # missing: OSError; not JSON: ValueError;
                                                        # other schema_version: InfraError;
                                                        # not a gate report: MalformedReport (a ValueError)
    report.save(run_dir)                                # atomic, secrets redacted
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.release import Pin, PinSource, pin_from_dict, pin_source
from pipeline.core.result import StageResult
from pipeline.core.rundir import REPORT_FILE, RunDir
from pipeline.core.verdict import VERDICTS, Verdict
from pipeline.errors import InfraError
from pipeline.report.load import Knee, LoadLevel, LoadResults
from pipeline.util.secrets import redact, redact_data

SCHEMA_VERSION = 1
REQUIRED = ("gate_id", "model_name", "candidate", "stages", "tracking", "verdict")


class MalformedReport(ValueError):
    """A JSON document of the right schema_version that is not a gate report; `field` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Candidate:
    """The pin the gate judged, as the report records it (with its URI)."""

    source: PinSource
    repo: str
    revision: str
    uri: str
    files: dict[str, str]

    @classmethod
    def of(cls, pin: Pin) -> Candidate:
        return cls(source=pin.source, repo=pin.repo, revision=pin.revision, uri=pin.uri(), files=dict(pin.files))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(source=pin_source(d["source"]), repo=str(d["repo"]), revision=str(d["revision"]),
                   uri=str(d["uri"]), files=dict(d.get("files") or {}))

    def pin(self) -> Pin:
        return pin_from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "repo": self.repo, "revision": self.revision, "uri": self.uri,
                "files": self.files}


@dataclass(frozen=True)
class SourceControl:
    """The repository the gate ran in: its commit, whether it was dirty, the PR and the change's author."""

    commit: str
    dirty: bool | None
    pr: int | None
    author: str | None = None  # absent in reports older than the self-approval check

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SourceControl:
        return cls(commit=str(d["commit"]), dirty=d.get("dirty"), pr=d.get("pr"), author=d.get("author"))

    def to_dict(self, with_author: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"commit": self.commit, "dirty": self.dirty, "pr": self.pr}
        if with_author:
            out["author"] = self.author
        return out


@dataclass(frozen=True)
class Environment:
    """The versions the gate ran with (MLflow params `version.<name>`)."""

    modelgate: str
    vllm: str
    lm_eval: str
    mlflow: str
    python: str
    platform: str
    cpu_count: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Environment:
        return cls(**{f.name: str(d[f.name]) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Tracking:
    """Where the gate is recorded: the MLflow store (display form, no credentials), experiment, run, version.
    `error` is the tracking failure that kept the report local (`modelgate sync` records it later)."""

    uri: str
    experiment: str
    run_id: str | None = None
    experiment_id: str | None = None
    model_version: str | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tracking:
        return cls(uri=str(d.get("uri") or ""), experiment=str(d.get("experiment") or ""), run_id=d.get("run_id"),
                   experiment_id=d.get("experiment_id"),
                   model_version=None if d.get("model_version") is None else str(d["model_version"]),
                   error=d.get("error"))

    @property
    def recorded(self) -> bool:
        """The run and its model version were created (whether they still exist is the store's business)."""
        return bool(self.run_id and self.model_version)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uri": self.uri, "experiment": self.experiment, "run_id": self.run_id}
        for key in ("experiment_id", "model_version", "error"):  # set once known, like the gate always wrote
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class GateReport:
    gate_id: str
    model_name: str
    candidate: Candidate
    verdict: Verdict
    exit_code: int
    stages: tuple[StageResult, ...]
    tracking: Tracking
    served_name: str | None = None
    digests: dict[str, str] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    reasons: tuple[str, ...] = ()
    environment: Environment | None = None
    source_control: SourceControl | None = None
    # what production was when this gate judged the candidate: promotion refuses a stale gate
    baseline_version: str | None = None
    config_file: str | None = None
    run_dir: str = ""
    # release: the full configuration, registered, signed when a key is given; advisory: a pull request's gate,
    # recorded in the advisory experiment, never registered nor promotable (absent in older reports: release)
    gate_kind: str = "release"
    config_digest: str | None = None  # sha256 of release.yaml's gating-relevant content (signing.config_digest)
    # an advisory gate's smaller profile: prompt_cases, prompt_cases_total, eval_items (per task); None: everything
    sample: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    # keys the loaded document did not hold (older reports): left out again when it is saved
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    # -- reading ------------------------------------------------------------------------------------

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.name == name), None)

    def load_results(self) -> LoadResults:
        """The load stage's levels, rate levels, goodput and knee (empty when the stage did not measure)."""
        stage = self.stage("load")
        return LoadResults.from_details(stage.details) if stage is not None else LoadResults()

    @property
    def pr(self) -> int | None:
        return self.source_control.pr if self.source_control else None

    @property
    def author(self) -> str:
        return (self.source_control.author if self.source_control else None) or "unknown"

    @property
    def passed(self) -> bool:
        return self.verdict == Verdict.PASSED

    @property
    def sample_line(self) -> str | None:
        """What an advisory gate ran of the full configuration, for the PR comment; None: everything."""
        if self.gate_kind != "advisory":
            return None
        parts = []
        sample = self.sample or {}
        if sample.get("prompt_cases") is not None:
            parts.append(f"{sample['prompt_cases']} of {sample.get('prompt_cases_total', '?')} prompt cases "
                         "(a sample seeded by the revision)")
        if sample.get("eval_items") is not None:
            parts.append(f"the first {sample['eval_items']} items per eval task")
        return "advisory gate (not promotable): " + (", ".join(parts) if parts else "the full configuration")

    def with_tracking(self, **changes: Any) -> GateReport:
        return dataclasses.replace(self, tracking=dataclasses.replace(self.tracking, **changes))

    # -- the JSON document ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        src = self.source_control
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "gate_id": self.gate_id,
            "model_name": self.model_name,
            "candidate": self.candidate.to_dict(),
            "served_name": self.served_name,
            "digests": self.digests,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "reasons": list(self.reasons),
            "stages": [s.to_dict() for s in self.stages],
            "environment": self.environment.to_dict() if self.environment else None,
            "source_control": src.to_dict(with_author="source_control.author" not in self.absent) if src else None,
            "baseline_version": self.baseline_version,
            "config_file": self.config_file,
            "run_dir": self.run_dir,
            "gate_kind": self.gate_kind,
            "config_digest": self.config_digest,
            "sample": self.sample,
            "tracking": self.tracking.to_dict(),
        }
        return {k: v for k, v in out.items() if k not in self.absent}

    @classmethod
    def from_dict(cls, data: Any) -> GateReport:
        """The typed report from its JSON document; MalformedReport names the first missing or bad field."""
        if not isinstance(data, dict):
            raise MalformedReport(f"a JSON {type(data).__name__}, not an object")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise MalformedReport(f"{', '.join(missing)} missing", field=missing[0])
        absent = {k for k in ("served_name", "digests", "started_at", "finished_at", "exit_code", "reasons",
                              "environment", "source_control", "baseline_version", "config_file", "run_dir",
                              "gate_kind", "config_digest", "sample")
                  if k not in data}
        current = "verdict"
        try:
            verdict = Verdict(data["verdict"])
            current = "stages"
            stages = tuple(StageResult.from_dict(s) for s in data["stages"])
            current = "candidate"
            candidate = Candidate.from_dict(data["candidate"])
            current = "tracking"
            tracking = Tracking.from_dict(data["tracking"])
            current = "source_control"
            src = data.get("source_control")
            source_control = SourceControl.from_dict(src) if src else None
            if src and "author" not in src:
                absent.add("source_control.author")
            current = "environment"
            env = data.get("environment")
            environment = Environment.from_dict(env) if env else None
            current = "exit_code"
            exit_code = int(data["exit_code"]) if "exit_code" in data else VERDICTS[verdict]
            current = "reasons"
            reasons = tuple(str(r) for r in data.get("reasons") or ())
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedReport(f"field {current} is missing a part or of the wrong type ({exc})",
                                  field=current) from exc
        return cls(
            schema_version=int(data.get("schema_version", SCHEMA_VERSION)), gate_id=str(data["gate_id"]),
            model_name=str(data["model_name"]), candidate=candidate, served_name=data.get("served_name"),
            digests=dict(data.get("digests") or {}), started_at=str(data.get("started_at") or ""),
            finished_at=str(data.get("finished_at") or ""), verdict=verdict, exit_code=exit_code, reasons=reasons,
            stages=stages, environment=environment, source_control=source_control,
            baseline_version=data.get("baseline_version"), config_file=data.get("config_file"),
            run_dir=str(data.get("run_dir") or ""), gate_kind=str(data.get("gate_kind") or "release"),
            config_digest=data.get("config_digest"), sample=data.get("sample"), tracking=tracking,
            absent=frozenset(absent))

    @classmethod
    def load(cls, path: Path) -> GateReport:
        """report.json -> GateReport. A missing file is an OSError, a file that is not JSON a ValueError, another
        schema_version an InfraError, a JSON document that is not a gate report a MalformedReport."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise InfraError(f"{path}: report schema_version {version!r} is not {SCHEMA_VERSION}")
        return cls.from_dict(data)

    def redacted(self) -> GateReport:
        """This report with every secret value replaced in every field, before any rendering: a renderer escapes
        text (markdown's `\\+`, HTML's `&amp;`), so a secret redacted only in the rendered text could slip
        through in its escaped spelling."""
        return GateReport.from_dict(redact_data(self.to_dict()))

    def save(self, run_dir: Path) -> Path:
        """Write report.json atomically (temp file + rename), secrets redacted. Disk errors are infrastructure
        errors."""
        path = RunDir(run_dir).report
        text = redact(json.dumps(redact_data(self.to_dict()), indent=2, sort_keys=False, default=str))
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".report-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            raise InfraError(f"cannot write the gate report to {path}: {exc.strerror or exc}") from exc
        return path


__all__ = ["REPORT_FILE", "SCHEMA_VERSION", "Candidate", "Environment", "GateReport", "Knee", "LoadLevel",
           "LoadResults", "MalformedReport", "SourceControl", "Tracking"]
