"""How much larger one sample is than another, from ranks (pure math): Mann-Whitney U and Hodges-Lehmann.

Used by the load test to compare a candidate's per-request latencies with production's recorded ones (as
canary judges such as Kayenta's Mann-Whitney judge compare canary and baseline). The samples are independent
(different runs), not paired. On the log scale a shift is a ratio, so the estimate and bounds read as "the
candidate's latency is x% higher":

- HL estimate: the median of the n*m differences log(c_i) - log(b_j) (Walsh-type differences of two samples).
- Bounds: the distribution-free confidence bounds that invert the one-sided Mann-Whitney test. With u* the
  smallest U whose upper tail P(U >= u*) <= alpha under "no shift", the lower bound is the u*-th largest
  difference (every shift below it is rejected by the one-sided test at level alpha), the upper bound the
  u*-th smallest. Each bound holds with confidence 1 - alpha (the pair is a 1 - 2*alpha two-sided interval).
  The null distribution of U is exact (counted) for n*m <= EXACT_MAX_PAIRS, else the normal approximation with
  continuity correction. With too few values no difference is outside the tail (u* > n*m): no bound (None).

Assumption, stated because it is what a reader must know: the requests of one run are treated as independent
draws. They are not quite (a closed loop of concurrent clients on one server), and a machine that is slower
during one whole run shifts every request of that run; such drift is not in the interval. The A/A test
(tests/e2e/test_external_endpoint.py) measures how often that makes the same model look slower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

EXACT_MAX_PAIRS = 2_500


@dataclass(frozen=True)
class Shift:
    """Candidate vs baseline as a relative change in percent (+12.0: the candidate's values are 12% higher)."""

    n_candidate: int
    n_baseline: int
    estimate_pct: float  # Hodges-Lehmann
    lower_pct: float | None  # one-sided 1 - alpha lower bound; None: too few values for one
    upper_pct: float | None  # one-sided 1 - alpha upper bound
    p_greater: float  # one-sided Mann-Whitney p-value for "the candidate's values are larger"
    p_less: float  # ... "smaller"
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _positive(values: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{what}: need a non-empty 1-D sample")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{what}: values must be finite and positive (ratios are taken)")
    return a


@lru_cache(maxsize=64)
def _null_counts(n: int, m: int) -> tuple[int, ...]:
    """Number of orderings with U = 0..n*m: the coefficients of the Gaussian binomial [n+m choose n]_q."""
    size = n * m + 1
    poly = [0] * size
    poly[0] = 1
    for i in range(1, n + 1):  # multiply by (1 - q^(m+i)) / (1 - q^i)
        k = m + i
        for u in range(size - 1, k - 1, -1):
            poly[u] -= poly[u - k]
        for u in range(i, size):
            poly[u] += poly[u - i]
    return tuple(poly)


def critical_u(n: int, m: int, alpha: float) -> int:
    """The smallest u with P(U >= u) <= alpha when there is no shift (n*m + 1 when none is)."""
    if not 0 < alpha <= 0.5:
        raise ValueError(f"alpha must be in (0, 0.5], got {alpha}")
    nm = n * m
    if nm <= EXACT_MAX_PAIRS:
        counts = _null_counts(n, m)
        total = math.comb(n + m, n)
        tail = 0
        for u in range(nm, -1, -1):  # P(U >= u) grows as u falls
            tail += counts[u]
            if tail > alpha * total:
                return u + 1
        return 0
    from scipy.stats import norm

    sigma = math.sqrt(nm * (n + m + 1) / 12.0)
    return math.ceil(nm / 2 + 0.5 + norm.ppf(1 - alpha) * sigma)


def log_shift(candidate: Sequence[float], baseline: Sequence[float], alpha: float = 0.05) -> Shift:
    """The candidate's values relative to the baseline's on the log scale (see the module docstring)."""
    from scipy.stats import mannwhitneyu

    c = np.log(_positive(candidate, "candidate"))
    b = np.log(_positive(baseline, "baseline"))
    n, m = c.size, b.size
    diffs = np.sort(np.subtract.outer(c, b).ravel())
    u_star = critical_u(n, m, alpha)
    pct = lambda v: float(100.0 * math.expm1(v))  # noqa: E731
    lower = upper = None
    if u_star <= n * m:
        lower = pct(diffs[n * m - u_star])
        upper = pct(diffs[u_star - 1])
    greater = float(mannwhitneyu(c, b, alternative="greater").pvalue)
    less = float(mannwhitneyu(c, b, alternative="less").pvalue)
    return Shift(n, m, pct(float(np.median(diffs))), lower, upper, greater, less, alpha)
