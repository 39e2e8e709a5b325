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


# an advisory gate's pass where a release gate would be inconclusive: its first reason, before the stages' own
ADVISORY_PASS = ("advisory gate: nothing was shown worse than production; at this sample size a release gate "
                 "would be inconclusive, and drops smaller than the stated detectable ones could have been missed")


def decide(results: list[StageResult], *, advisory: bool = False) -> tuple[Verdict, int, list[str]]:
    """Return (verdict, exit code, reasons). No stage run at all, or only skips, is not a pass.

    `advisory` (a pull request's gate, never promotable): fail when clearly worse, otherwise pass stating what it
    could have missed. An inconclusive result there is a pass whose reasons are ADVISORY_PASS and then the
    inconclusive stages' own (each metric's estimate, interval and smallest detectable drop); a rejection, an
    error or an interrupt decides as in a release gate."""
    found = {_FROM_STATUS[r.status] for r in results if r.status in _FROM_STATUS}
    for verdict in VERDICTS:
        if verdict in found:
            reasons = [f"{r.name}: {reason}" for r in results if _FROM_STATUS.get(r.status) == verdict
                       for reason in (r.reasons or [r.status.value])]
            if advisory and verdict == Verdict.INCONCLUSIVE:
                return Verdict.PASSED, EXIT_PASSED, [ADVISORY_PASS, *reasons]
            return verdict, VERDICTS[verdict], reasons
    if not any(r.status == Status.PASSED for r in results):
        return Verdict.ERROR, EXIT_INFRA, ["no stage ran"]
    return Verdict.PASSED, EXIT_PASSED, [f"{r.name}: passed" for r in results if r.status == Status.PASSED]
