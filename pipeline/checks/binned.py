"""The load stage's noise-aware comparison (checks/shift.py) for latencies that are only known as histogram bucket
counts, as Prometheus holds them: production's requests over a window, counted per vLLM histogram bucket.

Every request of a bucket (lo, hi] stands at the bucket's geometric middle sqrt(lo*hi) (the first bucket at
hi/2, the +Inf bucket at 1.5x the last bound): the ranks of two such samples are those of the requests, up to
ties inside a bucket, so the Mann-Whitney bounds of shift.py carry over. The n*m differences of log values are
never listed: they are the bucket pairs' differences, weighted by count_i x count_j, and a bound is the k-th
smallest of them in weighted order (k from shift.critical_u, as in shift.log_shift). The resolution is the
buckets': a shift smaller than a bucket's width shows as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.checks.shift import critical_u


def bucket_values(bounds: Sequence[float]) -> list[float]:
    """The value standing for each bucket; `bounds` are the finite upper bounds, ascending (+Inf follows)."""
    out = []
    lo = 0.0
    for hi in bounds:
        out.append(hi / 2 if lo <= 0 else math.sqrt(lo * hi))
        lo = hi
    out.append(1.5 * lo if lo > 0 else 1.0)  # +Inf
    return out


def per_bucket(cumulative: Sequence[float]) -> list[int]:
    """Cumulative bucket counts (Prometheus `le` buckets, +Inf last) -> whole counts per bucket."""
    out, before = [], 0.0
    for c in cumulative:
        out.append(max(0, round(c - before)))
        before = max(before, c)
    return out


def binned_log_shift(candidate: Sequence[int], baseline: Sequence[int], values: Sequence[float],
                     alpha: float = 0.05) -> dict[str, float | int | None]:
    """Candidate vs baseline as a relative change in percent: the Hodges-Lehmann estimate and the one-sided 1 - alpha
    bounds (None when there are too few requests for one), like shift.log_shift."""
    n, m = sum(candidate), sum(baseline)
    if n == 0 or m == 0:
        return {"n_candidate": n, "n_baseline": m, "estimate_pct": None, "lower_pct": None, "upper_pct": None}
    logs = [math.log(v) for v in values]
    pairs = sorted((logs[i] - logs[j], candidate[i] * baseline[j]) for i in range(len(values))
                   for j in range(len(values)) if candidate[i] and baseline[j])

    def kth(k: int) -> float:  # the k-th smallest difference (1-based) in weighted order
        seen = 0
        for diff, weight in pairs:
            seen += weight
            if seen >= k:
                return diff
        return pairs[-1][0]

    nm = n * m
    u_star = critical_u(n, m, alpha)
    pct = lambda v: round(100.0 * math.expm1(v), 2)  # noqa: E731
    lower = upper = None
    if u_star <= nm:
        lower, upper = pct(kth(nm - u_star + 1)), pct(kth(u_star))
    return {"n_candidate": n, "n_baseline": m, "estimate_pct": pct(kth((nm + 1) // 2)), "lower_pct": lower,
            "upper_pct": upper}
