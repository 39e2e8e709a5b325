"""One release operation per model at a time: a claim in the audit experiment, earliest wins.

MLflow has no compare-and-set, so a claim is "create my in-progress audit run, then look": among the
in-progress promote/rollback runs of the model, the one that started first (start time, then run id)
goes on; the others mark themselves `lost` and stop with `Conflict` before changing anything. A winner
looks again after `settle_s`, so a rival whose create landed late but carries an earlier start time still
wins exactly once (the window this closes is a create slower than `settle_s`).

An operation interrupted half-way leaves its claim in progress: re-running the same operation (same
event, same target version) adopts that claim and completes the remaining steps; anything else gets a
`Conflict` that says how to finish it.
"""

from __future__ import annotations

import time

from pipeline.errors import Conflict
from pipeline.releasing.audit import IN_PROGRESS, LOST, PROMOTE, ROLLBACK, AuditEvent, AuditLog


def in_progress(log: AuditLog, model_name: str) -> list[AuditEvent]:
    """The verified operations in progress (an unsealed run claims nothing: it cannot block or be resumed)."""
    return [e for e in log.events(model_name, state=IN_PROGRESS) if e.event in (PROMOTE, ROLLBACK) and e.verified]


def resume_hint(ev: AuditEvent) -> str:
    cmd = (f"modelgate promote --version {ev.version}" if ev.event == PROMOTE
           else f"modelgate rollback --to {ev.version}")
    return (f"{ev.event} of {ev.model_name} v{ev.version} by {ev.actor} is in progress since {ev.at} "
            f"(audit run {ev.run_id}, steps done: {', '.join(ev.steps) or 'none'}); finish it with `{cmd}`")


def find_resumable(log: AuditLog, model_name: str, event: str, version: str) -> AuditEvent | None:
    """The interrupted operation this command would complete, or Conflict if another one holds the model."""
    open_claims = in_progress(log, model_name)
    if not open_claims:
        return None
    first = open_claims[0]
    if first.event == event and first.version == str(version):
        return first
    raise Conflict(resume_hint(first))


def acquire(log: AuditLog, mine: AuditEvent, settle_s: float = 1.0) -> None:
    """Return when `mine` holds the model; raise Conflict (after marking it lost) when a rival does."""
    for attempt in range(2):
        rivals = in_progress(log, mine.model_name)
        first = rivals[0] if rivals else mine
        if first.run_id != mine.run_id and (first.start_ms, first.run_id) < (mine.start_ms, mine.run_id):
            log.finish(mine, LOST)
            raise Conflict(f"another release operation won the claim on {mine.model_name}: {resume_hint(first)}")
        if attempt == 0 and settle_s > 0:
            time.sleep(settle_s)
