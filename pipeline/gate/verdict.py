"""From stage statuses to the gate's verdict and exit code (DESIGN.md): the one place that decides."""

from __future__ import annotations

from pipeline.errors import EXIT_INCONCLUSIVE, EXIT_INFRA, EXIT_INTERRUPTED, EXIT_PASSED, EXIT_REJECTED
from pipeline.gate.result import StageResult, Status

# verdict -> exit code; the order is the precedence when stages disagree
VERDICTS = {
    "interrupted": EXIT_INTERRUPTED,
    "error": EXIT_INFRA,
    "rejected": EXIT_REJECTED,
    "inconclusive": EXIT_INCONCLUSIVE,
    "passed": EXIT_PASSED,
}
_FROM_STATUS = {
    Status.INTERRUPTED: "interrupted",
    Status.ERROR: "error",
    Status.FAILED: "rejected",
    Status.INCONCLUSIVE: "inconclusive",
}


def decide(results: list[StageResult]) -> tuple[str, int, list[str]]:
    """Return (verdict, exit code, reasons). No stage run at all, or only skips, is not a pass."""
    found = {_FROM_STATUS[r.status] for r in results if r.status in _FROM_STATUS}
    for verdict in VERDICTS:
        if verdict in found:
            reasons = [f"{r.name}: {reason}" for r in results if _FROM_STATUS.get(r.status) == verdict
                       for reason in (r.reasons or [r.status.value])]
            return verdict, VERDICTS[verdict], reasons
    if not any(r.status == Status.PASSED for r in results):
        return "error", EXIT_INFRA, ["no stage ran"]
    return "passed", EXIT_PASSED, [f"{r.name}: passed" for r in results if r.status == Status.PASSED]
