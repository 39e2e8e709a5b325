"""The one word every judge decides with, and the one place it becomes a stage's status.

A metric compared with production (checks/stats.py), a replay check (gate/stages/replay.py), a load level
compared with production's (checks/slo.py): each decides pass, fail or inconclusive. A stage folds its decisions
with `fold`: any fail fails it, else any inconclusive makes it inconclusive, else it passed. The values are the
strings report.json has always held ("pass", "fail", "inconclusive"); a judge may show its own words for them
(the load comparison prints "within threshold" and "regressed")."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from pipeline.core.result import Status


class Decision(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


# the deciding ones first: a report lists failures, then what could not be decided, then passes
ORDER = {Decision.FAIL: 0, Decision.INCONCLUSIVE: 1, Decision.PASS: 2}


def fold(decisions: Iterable[str]) -> Status:
    """A stage's status from its judges' decisions (strings as a report holds them, or Decisions)."""
    seen = {Decision(d) for d in decisions}
    if Decision.FAIL in seen:
        return Status.FAILED
    if Decision.INCONCLUSIVE in seen:
        return Status.INCONCLUSIVE
    return Status.PASSED


def deciding_first(decision: str) -> int:
    """A sort key: fail, then inconclusive, then pass."""
    return ORDER[Decision(decision)]
