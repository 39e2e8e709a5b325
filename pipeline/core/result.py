"""What a stage returns: plain data, no I/O. The runner and `record` turn it into the report and MLflow."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"  # the candidate is rejected by this stage
    ERROR = "error"  # the stage could not run (infrastructure); the gate cannot judge
    SKIPPED = "skipped"
    INCONCLUSIVE = "inconclusive"
    INTERRUPTED = "interrupted"


@dataclass
class StageResult:
    name: str
    status: Status
    metrics: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    # name -> local file path; logged to MLflow as artifacts under stages/<name>/
    artifacts: dict[str, str] = field(default_factory=dict)
    # free-form structured details that go into the report (tables, per-case results)
    details: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "duration_s": round(self.duration_s, 3),
            "metrics": self.metrics,
            "reasons": self.reasons,
            "artifacts": self.artifacts,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageResult:
        """A stage as a saved report holds it (KeyError/ValueError/TypeError when it is not one)."""
        return cls(name=str(d["name"]), status=Status(d["status"]), metrics=dict(d.get("metrics") or {}),
                   reasons=[str(r) for r in d.get("reasons") or []], artifacts=dict(d.get("artifacts") or {}),
                   details=dict(d.get("details") or {}), duration_s=float(d.get("duration_s") or 0.0))
