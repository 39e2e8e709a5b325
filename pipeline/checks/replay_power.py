"""What a replay check can tell: production's own pass rate, the smallest drop it detects, and whether a candidate
that breaks the check could be told from production at all (pure judging; the statistics are power.py's).

A replay check pairs the candidate's pass/fail with production's on the same requests, so it can only see a drop in
what production passes: a check production passes on k of n requests can fall by at most k/n. Its power is stated
as the compare table states a metric's:

    mde          the smallest true drop detected with 80% power at this n and alpha: the metric row's `mde`
                 (stats.compare_metric, from the observed discordance)
    break_power  the exact chance that the gate detects a total break, a candidate that fails every request
                 production passes: power.binary_power with discordance = drop = k/n

    no power     break_power below 80%: even a total break would most likely go unnoticed ("no power: production
                 passes 0 of 31" passes nothing that could be lost)
    low power    production fails most requests (k < n/2): a total break is detected, a smaller drop may not be
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pipeline.checks import power as pw
from pipeline.checks.stats import MetricComparison
from pipeline.core.decision import Decision

Flag = Literal["no power", "low power"]


@dataclass(frozen=True)
class CheckPower:
    """One replay check's sensitivity; `production_passes` None: no production answers (absolute floors only)."""

    check: str
    n: int
    production_passes: int | None
    mde: float | None
    break_power: float | None
    power: float = pw.POWER

    @property
    def production_rate(self) -> float | None:
        return None if self.production_passes is None or not self.n else self.production_passes / self.n

    @property
    def flag(self) -> Flag | None:
        if self.production_passes is None or self.break_power is None:
            return None
        if self.break_power < self.power:
            return "no power"
        return "low power" if 2 * self.production_passes < self.n else None

    def production_line(self) -> str:
        """'29 of 31 (93.5%)', or '-' without production answers."""
        rate = self.production_rate
        return "-" if rate is None else f"{self.production_passes} of {self.n} ({rate:.1%})"

    def label(self) -> str | None:
        """'no power: production passes 0 of 31' (None: the check has its power)."""
        flag = self.flag
        return None if flag is None else f"{flag}: production passes {self.production_passes} of {self.n}"

    def note(self) -> str | None:
        """The label with what it means, for the report's notes, the PR comment and MLflow."""
        label = self.label()
        if label is None:
            return None
        total = (f"a candidate that fails every request production passes would be detected with "
                 f"{self.break_power or 0:.0%} power")
        smallest = "" if self.mde is None else f"; the smallest drop detected with {self.power:.0%} power is " \
            f"{self.mde:.3f}"
        return f"replay/{self.check}: {label}: {total}{smallest}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flag": self.flag}

    @classmethod
    def from_dict(cls, check: str, d: Mapping[str, Any]) -> CheckPower:
        """From a replay stage's `per_check` entry (reports before the power was stated: no production passes)."""
        passes = d.get("production_passes")
        return cls(check=check, n=int(d.get("n") or 0), production_passes=None if passes is None else int(passes),
                   mde=d.get("mde"), break_power=d.get("break_power"), power=float(d.get("power") or pw.POWER))


@dataclass(frozen=True)
class ReplayCheck:
    """One replay check as the report shows it (a replay stage's `per_check` entry): the candidate's and
    production's pass rates side by side, the verdict and the check's power."""

    candidate: float | None
    production: float | None  # None: no production answers (absolute floors only)
    verdict: Decision
    power: CheckPower

    @property
    def check(self) -> str:
        return self.power.check

    @classmethod
    def of(cls, comparison: MetricComparison, power: CheckPower) -> ReplayCheck:
        return cls(comparison.candidate_mean, comparison.baseline_mean, comparison.verdict, power)

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "production": self.production, "verdict": self.verdict,
                **self.power.to_dict()}

    @classmethod
    def from_dict(cls, check: str, d: Mapping[str, Any]) -> ReplayCheck:
        return cls(d.get("candidate"), d.get("production"), Decision(d["verdict"]), CheckPower.from_dict(check, d))

    def production_shown(self) -> str:
        """Production's passes ('29 of 31 (93.5%)'); reports before the power was stated: its pass rate."""
        if self.power.production_passes is not None:
            return self.power.production_line()
        return "-" if self.production is None else f"{self.production:.1%}"


def check_power(check: str, comparison: MetricComparison, production: Sequence[float] | None,
                alpha: float = 0.05) -> CheckPower:
    """The power of `check` from its metric comparison and production's 0/1 outcomes (None: not paired)."""
    if production is None or not production:
        return CheckPower(check, comparison.n, None, comparison.mde, None, comparison.power)
    passes = int(sum(1 for v in production if v))
    n = len(production)
    rate = passes / n
    broken = 0.0 if passes == 0 else pw.binary_power(n, rate, rate, alpha)
    return CheckPower(check, n, passes, comparison.mde, broken, comparison.power)
