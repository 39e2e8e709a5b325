"""One window of production, judged (pure: no I/O). Each signal is `healthy`, `degraded`, `no data` or `reported`
(shown, never judged); the window is `no data` when fewer than watch.min_requests requests arrived in it (no data
is never degraded), else `degraded` when any signal is, else `healthy`. Requests are counted when they arrive
(finished in the window, or still running or waiting at its end beyond those at its start: promql.arrived), so a
version too slow to keep up is judged at the traffic it was offered, not at the fewer requests it finished.

Against the SLOs (gates.load.slo, watch.max_failed_share, watch.max_queue): the window's value above the limit;
the unfinished share (the backlog the window added / its arrivals) when the lower one-sided 1 - gates.alpha bound
of it is above watch.max_unfinished_share.

Against the previous version's window before the promotion, only at a comparable arrival rate (max/min of the
two rates <= 1 + watch.rate_tolerance; else `not compared` with both rates), with the load stage's noise-aware
rule: e2e latency and TTFT per request (histogram buckets, checks/binned.py) are degraded only when the lower
one-sided 1 - gates.alpha bound of the increase exceeds gates.load.regression_pct; a share (failed and finished by
length, of the finished requests; unfinished, of the arrived ones) only when the lower bound of its increase
(normal approximation of two proportions) exceeds watch.max_share_increase. An interval that straddles the
threshold is reported, not degraded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.checks import slo
from pipeline.checks.binned import binned_log_shift, bucket_values, per_bucket
from pipeline.config.release import Release
from pipeline.core.decision import Decision

HEALTHY, DEGRADED, NO_DATA, REPORTED = "healthy", "degraded", "no data", "reported"


@dataclass
class Signal:
    name: str
    value: float | None
    status: str
    unit: str = ""
    evidence: list[str] = field(default_factory=list)
    query: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit, "status": self.status,
                "evidence": self.evidence, "query": self.query}


@dataclass
class Judgement:
    status: str
    signals: list[Signal]
    compared: str  # what the previous version's window was, or why it was not compared
    window: dict[str, Any]

    def degraded(self) -> list[Signal]:
        return [s for s in self.signals if s.status == DEGRADED]

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "compared": self.compared, "window": self.window,
                "signals": [s.as_dict() for s in self.signals]}


def _shown(v: float | None, unit: str) -> str:
    return "none" if v is None else f"{v:.4g}{(' ' + unit) if unit else ''}"


def comparable(after: dict[str, Any], before: dict[str, Any] | None, release: Release) -> str | None:
    """None when the previous window can be compared; else why not."""
    if before is None:
        return "no previous version"
    if (before.get("requests") or 0) < release.watch.min_requests:
        return f"the previous version's window has {before.get('requests') or 0:.0f} arrived requests " \
               f"(< min_requests {release.watch.min_requests})"
    a, b = after.get("request_rate") or 0.0, before.get("request_rate") or 0.0
    if a <= 0 or b <= 0 or max(a, b) / min(a, b) > 1 + release.watch.rate_tolerance:
        return (f"arrival rates not comparable: {a:.3g} req/s now vs {b:.3g} req/s before the promotion "
                f"(rate_tolerance {release.watch.rate_tolerance:g})")
    return None


def _against_slo(sig: Signal, limit: float | None) -> Signal:
    """No value: no data. Else degraded above the SLO's limit, with the evidence line either way."""
    if sig.value is None:
        sig.status = NO_DATA
    elif limit is not None:
        if sig.value > limit:
            sig.status = DEGRADED
        unit = f" {sig.unit}" if sig.unit else ""
        sig.evidence.append(f"SLO {limit:g}{unit}: {'above' if sig.value > limit else 'within'}")
    return sig


def _latency(name: str, after: dict[str, Any], before: dict[str, Any] | None, limit: float | None,
             gated_vs_previous: bool, release: Release) -> Signal:
    sig = _against_slo(Signal(name, after.get(name), HEALTHY, "ms", query=after["queries"].get(name, "")), limit)
    if sig.value is None:
        return sig
    if before is not None and gated_vs_previous and name in after.get("buckets", {}) \
            and name in before.get("buckets", {}):
        bounds, cum_a = after["buckets"][name]
        _, cum_b = before["buckets"][name]
        shift = binned_log_shift(per_bucket(cum_a), per_bucket(cum_b), bucket_values(bounds), release.alpha)
        pct = release.load_gate.regression_pct
        lo, hi, est = shift["lower_pct"], shift["upper_pct"], shift["estimate_pct"]
        decision = slo.increase_decision(lo, hi, pct)
        if decision == Decision.FAIL:
            sig.status = DEGRADED
        verdict = slo.WORDS[decision] + (" (not degraded)" if decision == Decision.INCONCLUSIVE else "")
        show = lambda v: "?" if v is None else f"{v:+.1f}%"  # noqa: E731
        sig.evidence.append(f"vs previous: {show(est)} [{show(lo)}, {show(hi)}] per request "
                            f"({shift['n_candidate']} vs {shift['n_baseline']} requests, regresses above "
                            f"+{pct:g}%): {verdict}")
    elif before is not None and before.get(name) is not None:
        sig.evidence.append(f"previous {before[name]:.4g} ms (reported)")
    return sig


def _share_variance(p: float, n: float) -> float:
    """The variance of a share p of n requests (normal approximation; p(1-p) kept within [0, 1/4], as a share outside
    [0, 1] can be: a draining window's unfinished share is negative)."""
    return min(max(p * (1 - p), 0.0), 0.25) / max(n, 1)


def _share(name: str, after: dict[str, Any], before: dict[str, Any] | None, limit: float | None,
           release: Release, of: str = "finished", bounded_limit: bool = False) -> Signal:
    """A share of the window's `of` requests (finished, or arrived: `requests`). Against `limit`: the value above it,
    or with `bounded_limit` its lower confidence bound above it. Against the previous window: the lower bound of the
    increase above watch.max_share_increase."""
    sig = Signal(name, after.get(name), HEALTHY, query=after["queries"].get(name, ""))
    n1 = after.get(of) or 0.0
    z = _z(1 - release.alpha)
    if bounded_limit and sig.value is not None and limit is not None:
        lower = sig.value - z * math.sqrt(_share_variance(sig.value, n1))
        if lower > limit:
            sig.status = DEGRADED
        sig.evidence.append(f"SLO {limit:g}: at least {lower:.3f} with {100 * (1 - release.alpha):g}% confidence "
                            f"of {n1:.0f} requests: {'above' if lower > limit else 'within'}")
    else:
        _against_slo(sig, limit)  # no value: no data
    if sig.value is None:
        return sig
    if before is not None and before.get(name) is not None:
        p1 = sig.value
        p0, n0 = before[name], before.get(of) or 0.0
        lower = (p1 - p0) - z * math.sqrt(_share_variance(p1, n1) + _share_variance(p0, n0))
        limit_inc = release.watch.max_share_increase
        if lower > limit_inc:
            sig.status = DEGRADED
        sig.evidence.append(f"vs previous {p0:.3f}: {p1 - p0:+.3f} (at least {lower:+.3f} with "
                            f"{100 * (1 - release.alpha):g}% confidence; degraded above +{limit_inc:g}): "
                            f"{'regressed' if lower > limit_inc else 'not degraded'}")
    return sig


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(confidence)


def _reported(name: str, unit: str, after: dict[str, Any], before: dict[str, Any] | None) -> Signal:
    sig = Signal(name, after.get(name), REPORTED if after.get(name) is not None else NO_DATA, unit,
                 query=after["queries"].get(name, ""))
    if before is not None and before.get(name) is not None:
        sig.evidence.append(f"previous {_shown(before[name], unit)}")
    return sig


def judge(after: dict[str, Any], before: dict[str, Any] | None, release: Release) -> Judgement:
    """`after`, `before`: windows as watch/observe.py reads them (values, bucket counts, the queries)."""
    why_not = comparable(after, before, release)
    base = before if why_not is None else None
    slo = release.load_gate.slo
    signals = [
        _reported("request_rate", "req/s", after, before),
        _latency("p95_e2el_ms", after, base, slo.p95_e2el_ms, True, release),
        _latency("p95_ttft_ms", after, base, slo.p95_ttft_ms, True, release),
        _latency("p95_tpot_ms", after, base, slo.p95_tpot_ms, False, release),
        _share("failed_share", after, base, release.watch.max_failed_share, release),
        _share("length_share", after, base, None, release),
        _share("unfinished_share", after, base, release.watch.max_unfinished_share, release, of="requests",
               bounded_limit=True),
        _reported("output_tokens_per_request", "tokens", after, before),
        _reported("queue_max", "requests", after, before),
        _reported("preemptions", "", after, before),
    ]
    queue = next(s for s in signals if s.name == "queue_max")
    if release.watch.max_queue is not None and queue.value is not None:
        queue.status = DEGRADED if queue.value > release.watch.max_queue else HEALTHY
        queue.evidence.append(f"SLO {release.watch.max_queue:g}")
    requests = after.get("requests") or 0.0
    if requests < release.watch.min_requests:
        status = NO_DATA
    else:
        status = DEGRADED if any(s.status == DEGRADED for s in signals) else HEALTHY
    compared = (f"vs {before['served_name']} before the promotion" if why_not is None and before is not None
                else f"not compared with the previous version: {why_not}")
    window = {k: after.get(k) for k in ("served_name", "start", "end", "requests", "finished")}
    return Judgement(status, signals, compared, window)


def lines(j: Judgement) -> list[str]:
    """The judgement, signal by signal, for the console and the rollback's reason."""
    w = j.window
    finished = "" if w.get("finished") is None else f", {w['finished']:.0f} finished"
    out = [f"window {w['start']} .. {w['end']} ({w['served_name']}, {w['requests'] or 0:.0f} requests arrived"
           f"{finished}): "
           f"{j.status.upper()}; {j.compared}"]
    for s in j.signals:
        ev = f" ({'; '.join(s.evidence)})" if s.evidence else ""
        out.append(f"  {s.name}: {_shown(s.value, s.unit)}: {s.status}{ev}")
    return out
