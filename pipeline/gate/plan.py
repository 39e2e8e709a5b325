"""`modelgate plan`: how many paired items a metric's margin needs before a gate is run (checks/power.py).

The spread the answer depends on (discordant-pair rate of a 0/1 metric, sd of per-item differences of a
score) is given (--discordance / --sd) or taken from production, in this order:
  1. what production's own gate observed against its predecessor (its report's compare row), else
  2. production's recorded per-item values of the metric, as if the candidate were an independent model
     with production's distribution: discordance 2p(1 - p) for pass rate p, sd of differences sqrt(2) * sd.
     A candidate correlated with production (the usual case: a new version of the same model) flips fewer
     items, so this overstates the items needed: a conservative plan.
No reachable store or no production version: the caller must give the spread (bad input naming the option).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.checks import power as pw
from pipeline.checks.stats import infer_kind
from pipeline.config.release import Release
from pipeline.core.rundir import REPORT_FILE
from pipeline.errors import BadInput, InfraError
from pipeline.integrations import registry, tracking
from pipeline.integrations.mlflow_errors import error_types
from pipeline.releasing.chain import baseline_verifier
from pipeline.report.document import GateReport

NEED_SPREAD = "pass --discordance P (a 0/1 metric) or --sd S (a score)"


@dataclass(frozen=True)
class Plan:
    metric: str
    margin: float
    alpha: float
    power: float
    spread: pw.Spread
    source: str  # where the spread came from
    items: int  # paired items the margin needs
    production_n: int | None = None  # items production was gated on (when the spread came from there)

    def lines(self) -> list[str]:
        out = [f"metric: {self.metric} ({self.spread.kind})",
               f"spread: {self.spread.describe()}, from {self.source}" if not self.source.startswith("--")
               else f"spread: {self.spread.describe().split(' (')[0]} (given by {self.source})",
               f"alpha {self.alpha:g} (release.yaml gates.alpha), power {self.power:.0%}",
               f"margin {self.margin:g} needs {self.items} paired items"]
        if self.production_n:
            at = pw.mde(self.spread, self.production_n, self.alpha, self.power)
            out.append(f"at the {self.production_n} items production was gated on, the smallest drop detected with "
                       f"{self.power:.0%} power is {at:.3g}" + (" (this margin is underpowered there)"
                                                                if self.margin < at else ""))
        return out


def check_inputs(margin: float, power: float, discordance: float | None, sd: float | None) -> None:
    if not math.isfinite(margin) or margin <= 0:
        raise BadInput(f"must be a positive number, got {margin:g}", path="--margin")
    if not 0.5 <= power < 1:
        raise BadInput(f"must be in [0.5, 1), got {power:g}", path="--power")
    if discordance is not None and not 0 < discordance <= 1:
        raise BadInput(f"must be in (0, 1], got {discordance:g}", path="--discordance")
    if discordance is not None and margin > 1:
        raise BadInput(f"a drop in a pass rate is at most 1, got {margin:g}", path="--margin")
    if sd is not None and (not math.isfinite(sd) or sd <= 0):
        raise BadInput(f"must be a positive number, got {sd:g}", path="--sd")


def plan(release: Release, metric: str, margin: float, *, power: float = pw.POWER, discordance: float | None = None,
         sd: float | None = None, tracking_uri: str | None = None) -> Plan:
    check_inputs(margin, power, discordance, sd)
    alpha = release.alpha
    if discordance is not None:
        spread, source, n = pw.Spread("binary", discordance, True), "--discordance", None
    elif sd is not None:
        spread, source, n = pw.Spread("continuous", sd, True), "--sd", None
    else:
        spread, source, n = from_production(release, metric, tracking_uri)
        if spread.kind == "binary" and margin > 1:
            raise BadInput(f"a drop in a pass rate is at most 1, got {margin:g}", path="--margin")
    return Plan(metric, margin, alpha, power, spread, source, pw.items_needed(spread, margin, alpha, power), n)


def from_production(release: Release, metric: str, tracking_uri: str | None) -> tuple[pw.Spread, str, int]:
    """The spread of `metric` from the production version in the tracking store (see the module docstring)."""
    uri = tracking.resolve_uri(tracking_uri, configured=release.tracking_uri, root=release.root)
    where = tracking.display_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise BadInput(f"no tracking store at {where} to take production's spread from: {NEED_SPREAD}")
    try:
        tracking.preflight(uri)
        baseline = registry.BaselineStore(uri, verify=baseline_verifier(release, uri)).production(release.model_name)
    except InfraError as exc:
        raise BadInput(f"production's spread is not readable ({exc.one_line()}): {NEED_SPREAD}") from exc
    if baseline is None:
        raise BadInput(f"{release.model_name} has no production version in {where}: {NEED_SPREAD}")
    values = baseline.items.get(metric)
    if not values:
        raise BadInput(f"production v{baseline.version} recorded no per-item values of {metric} "
                       f"(recorded: {', '.join(sorted(baseline.items)) or 'none'}): {NEED_SPREAD}", path="--metric")
    vals = [float(v) for v in values.values()]
    n = len(vals)
    kind = infer_kind(metric, vals)
    observed = _observed_by_production_gate(uri, baseline.run_id, metric)
    if observed is not None and observed.kind == kind:
        return observed, f"production v{baseline.version}'s gate (observed against its own baseline)", n
    mean = sum(vals) / n
    if kind == "binary":
        rate = 2 * mean * (1 - mean)
        spread = pw.Spread(kind, rate, True) if rate > 0 else pw.Spread(kind, pw.no_spread_bound(n, release.alpha),
                                                                        False)
    else:
        var = sum((v - mean) ** 2 for v in vals) / max(n - 1, 1)
        spread = pw.Spread(kind, math.sqrt(2 * var), True) if var > 0 else \
            pw.Spread(kind, math.sqrt(pw.no_spread_bound(n, release.alpha)), False)
    return spread, (f"production v{baseline.version}'s {n} recorded items, as if the candidate were independent of it "
                    "(conservative)"), n


def _observed_by_production_gate(uri: str, run_id: str, metric: str) -> pw.Spread | None:
    """The discordance / sd production's own gate observed for `metric`; None when it had no baseline."""
    unreadable: tuple[type[BaseException], ...] = (*error_types(), ValueError, InfraError, OSError)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = registry.Registry(uri).client.download_artifacts(run_id, REPORT_FILE, tmp)
            report = GateReport.load(Path(path))
    except unreadable:
        return None
    stage = report.stage("compare")
    rows = stage.details.get("metrics") if stage else None
    for row in rows if isinstance(rows, list) else []:
        if row.get("name") != metric:
            continue
        if row.get("discordance") is not None:
            return pw.Spread("binary", float(row["discordance"]), True)
        if row.get("sd_diff") is not None:
            return pw.Spread("continuous", float(row["sd_diff"]), True)
    return None
