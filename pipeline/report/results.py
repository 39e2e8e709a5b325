"""What the compare and replay stages record about production, typed: the stages build these, the stage details
hold their dicts (report.json's shape), the renderings read them back (views.py). Older reports lack some fields:
they read with the defaults.

    CompareBaseline     what the compare stage paired with: production's version, run, revision, and whether
                        (and for which metrics) it was re-evaluated in this gate because an evalset changed
    ReplayProduction    where production's replay answers came from: recorded in the traffic, recorded by its
                        own gate, or asked in this gate (at its endpoint, booted on staging, or the candidate's
                        own revision), and why
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

ASKED_AT = {"endpoint": " at its own server", "staging": " booted on staging",
            "candidate": " (the candidate's own revision)"}


@dataclass(frozen=True)
class CompareBaseline:
    version: str
    run_id: str
    revision: str
    reevaluated: bool = False
    changed: list[str] = field(default_factory=list)  # evalsets (or metrics not recorded) changed since
    reevaluated_metrics: list[str] | None = None  # None: a report from before only stale metrics were redone
    verified: str | None = None  # how the baseline's record was verified (None: not said)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompareBaseline:
        redone = d.get("reevaluated_metrics")
        return cls(version=str(d["version"]), run_id=str(d.get("run_id") or ""), revision=str(d["revision"]),
                   reevaluated=bool(d.get("reevaluated")), changed=[str(c) for c in d.get("changed") or ()],
                   reevaluated_metrics=None if redone is None else [str(m) for m in redone],
                   verified=d.get("verified") or None)

    def line(self, metric_names: set[str]) -> str:
        """"baseline: production v3 (0123456789ab), paired with its recorded per-item results" (or how it was
        re-evaluated); `metric_names`: the stage's metrics."""
        changed = ", ".join(self.changed)
        redone = self.reevaluated_metrics
        kept = metric_names - set(redone or [])
        if not self.reevaluated:
            how = "paired with its recorded per-item results"
        elif redone is not None and kept:
            how = (f"re-evaluated in this gate for {', '.join(redone)} ({changed} changed), the other metrics "
                   "paired with its recorded per-item results")
        else:  # every metric re-evaluated (also every report from before only the stale ones were)
            how = f"re-evaluated in this gate ({changed} changed)"
        return f"baseline: production v{self.version} ({self.revision[:12]}), {how}"


@dataclass(frozen=True)
class ReplayProduction:
    version: str
    revision: str
    served_name: str
    recorded: int  # answers recorded in the traffic by production's served name
    from_gate: int  # answers production's own release gate recorded
    asked: int  # asked in this gate
    asked_at: str  # record | candidate | endpoint | staging
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReplayProduction:
        return cls(version=str(d["version"]), revision=str(d.get("revision") or ""),
                   served_name=str(d.get("served_name") or ""), recorded=int(d.get("recorded") or 0),
                   from_gate=int(d.get("from_gate") or 0), asked=int(d.get("asked") or 0),
                   asked_at=str(d.get("asked_at") or ""), why=str(d.get("why") or ""))

    def line(self) -> str:
        """"production v1 (chat@0123456789ab): 0 recorded answer(s), 100 recorded by its own gate, 0 asked in this
        gate"."""
        gate = f", {self.from_gate} recorded by its own gate" if self.from_gate else ""
        where = ASKED_AT.get(self.asked_at, "") if self.asked else ""
        why = f" ({self.why})" if self.why and self.asked else ""
        return (f"production v{self.version} ({self.served_name}): {self.recorded} recorded answer(s){gate}, "
                f"{self.asked} asked in this gate{where}{why}")
