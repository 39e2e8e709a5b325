"""From stage statuses to the gate's verdict and exit code (DESIGN.md): the one place that decides."""

from __future__ import annotations

from pipeline.core.result import StageResult, Status
from pipeline.core.verdict import VERDICTS, Verdict
from pipeline.errors import EXIT_INFRA, EXIT_PASSED

_FROM_STATUS = {
    Status.INTERRUPTED: Verdict.INTERRUPTED,
    Status.ERROR: Verdict.ERROR,
    Status.FAILED: Verdict.REJECTED,
    Status.INCONCLUSIVE: Verdict.INCONCLUSIVE,
}


def decide(results: list[StageResult]) -> tuple[Verdict, int, list[str]]:
    """Return (verdict, exit code, reasons). No stage run at all, or only skips, is not a pass."""
    found = {_FROM_STATUS[r.status] for r in results if r.status in _FROM_STATUS}
    for verdict in VERDICTS:
        if verdict in found:
            reasons = [f"{r.name}: {reason}" for r in results if _FROM_STATUS.get(r.status) == verdict
                       for reason in (r.reasons or [r.status.value])]
            return verdict, VERDICTS[verdict], reasons
    if not any(r.status == Status.PASSED for r in results):
        return Verdict.ERROR, EXIT_INFRA, ["no stage ran"]
    return Verdict.PASSED, EXIT_PASSED, [f"{r.name}: passed" for r in results if r.status == Status.PASSED]
