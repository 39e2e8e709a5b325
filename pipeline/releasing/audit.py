"""The audit trail: every approval, promotion and rollback is a run in MLflow's audit experiment, sealed.

MLflow keeps no history of alias moves, so modelgate records each one itself. One release operation
(promote or rollback) is one audit run: created `in-progress` when it claims the model (see claim.py),
its steps added as they finish, `completed` at the end. An approval is one finished run. Tags carry the
facts (`modelgate.event`, `.version`, `.from_version`, `.actor`, `.reason`, ...); `history` reads them back.

Every write seals the run (releasing/seal.py) with the audit key of the production environment when this process
holds it; a reader verifies each event against release.yaml's `signing.audit_keys` (`AuditEvent.verified`, or
`problem` saying why not). Release commands count only verified events: a run that an MLflow credential alone
wrote (a forged approval, a forged "promote completed") is shown by `history` as UNVERIFIED and believed by none.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import tags as tagnames
from pipeline.integrations.runstore import RunStore
from pipeline.integrations.tracking import RunRecord
from pipeline.releasing import seal

APPROVE, PROMOTE, ROLLBACK = "approve", "promote", "rollback"
IN_PROGRESS, COMPLETED, LOST = "in-progress", "completed", "lost"
T = tagnames.PREFIX
# what a rollback-readiness check records on an audit run (releasing/readiness.py), shown by `history`
READINESS_TAGS = ("outcome", "how", "detail", "rollback_ready", "rollback_ready_version", "rollback_ready_at",
                  "rollback_ready_detail", "rollback_ready_override")


def where_from() -> str:
    """Where an audit event was made: the GitHub Actions run, else the local user and host."""
    import getpass
    import os
    import socket

    if os.environ.get("GITHUB_ACTIONS") == "true":
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        return (f"github-actions {server}/{os.environ.get('GITHUB_REPOSITORY', '?')}/actions/runs/"
                f"{os.environ.get('GITHUB_RUN_ID', '?')} (triggered by {os.environ.get('GITHUB_ACTOR', '?')})")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"local {user}@{socket.gethostname()}"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class AuditEvent:
    run_id: str
    event: str
    model_name: str
    version: str
    actor: str
    at: str
    start_ms: int
    reason: str = ""
    state: str = COMPLETED
    from_version: str = ""
    steps: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    problem: str | None = "not verified"  # None: sealed by a trusted audit key (seal.py); else why it is not

    @property
    def verified(self) -> bool:
        return self.problem is None

    @classmethod
    def from_record(cls, run: RunRecord, keys: tuple[Any, ...] = ()) -> AuditEvent:
        tags = dict(run.tags)
        return cls(run_id=run.run_id, event=tags.get(T + "event", "?"), model_name=tags.get(T + "model_name", ""),
                   version=tags.get(T + "version", ""), actor=tags.get(T + "actor", ""), at=tags.get(T + "at", ""),
                   start_ms=run.start_ms, reason=tags.get(T + "reason", ""),
                   state=tags.get(T + "state", COMPLETED), from_version=tags.get(T + "from_version", ""),
                   steps=tuple(s for s in tags.get(T + "steps", "").split(",") if s), tags=tags,
                   problem=seal.verify(run.run_id, tags, keys))


class AuditLog:
    """Reads and writes audit runs (through RunStore: MLflow errors become InfraError, exit 3, there). `keys`: the
    trusted audit keys events are verified with; `sealer`: the audit key this process seals its writes with (None:
    written unsealed, which no release command believes)."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None, *,
                 keys: tuple[Any, ...] = (), sealer: Any | None = None) -> None:
        self.uri = uri
        self.experiment = experiment
        self.store = RunStore(uri, experiment, artifact_root)
        self.keys = keys
        self.sealer = sealer

    def _sealed(self, ev: AuditEvent, changed: dict[str, str]) -> None:
        """Write `changed` tags of `ev` and, holding the audit key, its new seal in the same batch."""
        ev.tags.update(changed)
        batch = dict(changed)
        if self.sealer is not None:
            batch[seal.SEAL_TAG] = seal.seal(ev.run_id, ev.tags, self.sealer, now_iso())
            ev.tags[seal.SEAL_TAG] = batch[seal.SEAL_TAG]
        if batch:
            self.store.set_tags(f"updating audit run {ev.run_id}", ev.run_id, batch)
        ev.problem = seal.verify(ev.run_id, ev.tags, self.keys)

    def open(self, event: str, model_name: str, version: str, actor: str, *, state: str = IN_PROGRESS,
             reason: str = "", **extra: str | None) -> AuditEvent:
        """Create an audit run; `state` completed finishes it at once (approvals)."""
        tags = {T + "kind": "audit", T + "event": event, T + "model_name": model_name, T + "version": str(version),
                T + "actor": actor, T + "at": now_iso(), T + "reason": reason[:4000], T + "state": state,
                T + "via": where_from(),
                **{T + k: str(v) for k, v in extra.items() if v is not None}}
        tags["mlflow.user"] = actor  # MLflow's "Created by" of the audit run
        run = self.store.create("recording an audit event", f"{event} v{version} by {actor}", tags,
                                finished=state != IN_PROGRESS)
        ev = AuditEvent.from_record(run, self.keys)
        self._sealed(ev, {})
        if state == COMPLETED:
            self.describe(ev)
        return ev

    def set(self, ev: AuditEvent, **values: str) -> None:
        self._sealed(ev, {T + key: str(value) for key, value in values.items()})

    def step_done(self, ev: AuditEvent, step: str) -> None:
        if step not in ev.steps:
            ev.steps = (*ev.steps, step)
            self.set(ev, steps=",".join(ev.steps))

    def finish(self, ev: AuditEvent, state: str) -> None:
        self.set(ev, state=state, finished_at=now_iso())
        ev.state = state
        self.store.terminate("finishing an audit event", ev.run_id, "FINISHED" if state == COMPLETED else "KILLED")
        if state == COMPLETED:
            self.describe(ev)

    def describe(self, ev: AuditEvent) -> None:
        """The registry reads at a glance: the version's description gains a line (who, when, why); a promotion
        or rollback also rewrites the model's "Production: vN since ..." line. The audit run is the record and
        this only a view of it: a store that refuses leaves a note on stderr, not a failed operation."""
        import sys

        from pipeline.errors import InfraError
        from pipeline.integrations.registry import Registry

        lines = describe_lines(ev)
        try:
            reg = Registry(self.uri)
            for version, line in lines:
                reg.add_version_line(ev.model_name, version, line)
            if ev.event in (PROMOTE, ROLLBACK):
                reg.set_production_line(ev.model_name, production_line(ev))
        except InfraError as exc:
            print(f"modelgate: note: the registry's descriptions were not updated: {exc.one_line()}", file=sys.stderr)

    def events(self, model_name: str, *, event: str | None = None, version: str | None = None,
               state: str | None = None, deleted: bool = False) -> list[AuditEvent]:
        """Matching events, oldest first (`deleted`: those whose runs were deleted in MLflow)."""
        clauses = [f"tags.`{T}model_name` = '{model_name}'", f"tags.`{T}kind` = 'audit'"]
        if event:
            clauses.append(f"tags.`{T}event` = '{event}'")
        if version is not None:
            clauses.append(f"tags.`{T}version` = '{version}'")
        if state:
            clauses.append(f"tags.`{T}state` = '{state}'")
        runs = self.store.search("searching the audit trail", " and ".join(clauses), deleted=deleted)
        return sorted((AuditEvent.from_record(r, self.keys) for r in runs), key=lambda e: (e.start_ms, e.run_id))

    def verified(self, model_name: str, *, state: str | None = None) -> list[AuditEvent]:
        """Matching events that verify (sealed by a trusted audit key), oldest first."""
        return [e for e in self.events(model_name, state=state) if e.verified]

    def get(self, run_id: str) -> AuditEvent:
        return AuditEvent.from_record(self.store.get("reading an audit event", run_id), self.keys)

    def approvals(self, model_name: str, version: str) -> list[AuditEvent]:
        """The version's approvals, verified or not (check_approvals counts the verified ones)."""
        return self.events(model_name, event=APPROVE, version=version)


def as_dict(ev: AuditEvent) -> dict[str, Any]:
    return {"event": ev.event, "model": ev.model_name, "version": ev.version, "actor": ev.actor, "at": ev.at,
            "reason": ev.reason, "state": ev.state, "from_version": ev.from_version or None,
            "steps": list(ev.steps), "audit_run_id": ev.run_id, "verified": ev.verified,
            **({"unverified": ev.problem} if ev.problem else {}),
            **{k.removeprefix(T): v for k, v in ev.tags.items()
               if k.startswith(T) and k.removeprefix(T) in ("promotion_id", "revision", "git_tag", "deployment_url",
                                                             "override_reason", "gate_run_id", "resumed_by", "via",
                                                             *READINESS_TAGS)}}


def _why(ev: AuditEvent) -> str:
    reason = ev.reason or ev.tags.get(T + "override_reason", "")
    return f": {' '.join(reason.split())[:300]}" if reason else ""


def describe_lines(ev: AuditEvent) -> list[tuple[str, str]]:
    """(version, line) for the versions' descriptions: "2026-12-01T03:10:00+00:00 APPROVED by alice: ..."."""
    at = ev.tags.get(T + "finished_at") or ev.at
    if ev.event == APPROVE:
        return [(ev.version, f"{ev.at} APPROVED by {ev.actor}{_why(ev)}")]
    was = f" (replacing v{ev.from_version})" if ev.from_version else ""
    if ev.event == PROMOTE:
        approvers = ev.tags.get(T + "approvers", "")
        by = f"; approved by {approvers}" if approvers else ""
        return [(ev.version, f"{at} PROMOTED to production by {ev.actor}{was}{by}{_why(ev)}")]
    if ev.event == ROLLBACK:
        out = [(ev.version, f"{at} ROLLED BACK TO: production again, by {ev.actor}{was}{_why(ev)}")]
        if ev.from_version and ev.from_version != ev.version:
            out.append((ev.from_version, f"{at} ROLLED BACK: production moved back to v{ev.version} by "
                                         f"{ev.actor}{_why(ev)}"))
        return out
    return []


def production_line(ev: AuditEvent) -> str:
    """"v4 since 2026-12-01T03:10:00+00:00 (promote by bob; approved by alice)" for the model's description."""
    at = ev.tags.get(T + "finished_at") or ev.at
    approvers = ev.tags.get(T + "approvers", "")
    by = f"; approved by {approvers}" if approvers else ""
    return f"v{ev.version} since {at} ({ev.event} by {ev.actor}{by}{_why(ev)})"
