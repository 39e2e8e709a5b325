"""The gate's verdict and the exit code each one means (errors.py). Deciding it from stage statuses is
gate/verdict.py's job; this is the word every floor reads (reports, policy, GitHub statuses)."""

from __future__ import annotations

import enum

from pipeline.errors import EXIT_INCONCLUSIVE, EXIT_INFRA, EXIT_INTERRUPTED, EXIT_PASSED, EXIT_REJECTED


class Verdict(enum.StrEnum):
    """The gate's verdict: the report's `verdict`, the MLflow tag `modelgate.verdict` (same strings)."""

    PASSED = "passed"
    REJECTED = "rejected"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    INTERRUPTED = "interrupted"


# verdict -> exit code; the order is the precedence when stages disagree
VERDICTS: dict[Verdict, int] = {
    Verdict.INTERRUPTED: EXIT_INTERRUPTED,
    Verdict.ERROR: EXIT_INFRA,
    Verdict.REJECTED: EXIT_REJECTED,
    Verdict.INCONCLUSIVE: EXIT_INCONCLUSIVE,
    Verdict.PASSED: EXIT_PASSED,
}
