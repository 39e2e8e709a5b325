"""Sensitivity of a paired comparison (pure math): the smallest drop it can see, and the items a margin needs.

The gate bounds delta = mean(candidate - baseline) over n paired items at one-sided level alpha
(stats.py). Its sensitivity is the minimum detectable effect (MDE): the smallest true drop that a
one-sided level-alpha paired test of "no difference" detects with probability `power`. Equivalently (to
the same normal approximation), the smallest margin at which a candidate exactly as good as production
passes the gate with probability `power`. A margin below the MDE is *underpowered*: the gate cannot tell
drops up to the MDE from no drop (they come out inconclusive or pass unnoticed, not rejected), and even
an equal candidate is usually inconclusive.

    binary (per-item 0/1; exact McNemar):  the exact power of the gate's own test, no approximation. With
        discordant-pair rate p, the number of discordant items is Binomial(n, p) and, given m of them, the
        candidate's wins are Binomial(m, (p - delta) / 2p); the power sums the probability of the exact
        conditional rejection region over both (see `binary_power`), and the MDE is found by bisection on
        delta. p is the observed discordance, but at least delta (a true drop of delta needs at least that
        many discordant items). Connor's normal approximation, delta*sqrt(n) = z(1-alpha)*sqrt(p) +
        z(power)*sqrt(p - delta^2), is about 10-20% optimistic for the exact test at a few dozen discordant
        pairs (the unit tests measure both by simulation), so it only brackets the search for `items_needed`.
    continuous (paired bootstrap):  delta = (z(1-alpha) + z(power)) * sd / sqrt(n), sd the standard deviation
        of the per-item differences (ddof 1): the normal approximation the percentile bootstrap follows.

No spread observed (no discordant pair; every difference equal) would claim an MDE of 0 from any n, even
3 items. Then the spread is taken at its exact one-sided (1 - alpha) upper bound instead, as the gate's own
McNemar bound does: the discordance rate q = 1 - alpha**(1/n) ("rule of three"), and for continuous values
sd = sqrt(q) * B, B the largest possible per-item difference (1 for scores in [0, 1], else the observed range).

`items_needed` inverts the MDE: the smallest n whose MDE is at most the margin. scipy is imported inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

POWER = 0.8
Kind = Literal["binary", "continuous"]


@dataclass(frozen=True)
class Spread:
    """What the sensitivity of one metric is computed from: the discordance (binary) or sd (continuous)."""

    kind: Kind
    value: float  # discordant-pair rate (binary) or sd of per-item differences (continuous)
    observed: bool  # False: no spread was observed, `value` is its (1 - alpha) upper bound

    def describe(self) -> str:
        what = "discordant-pair rate" if self.kind == "binary" else "sd of per-item differences"
        how = "observed" if self.observed else "upper bound (none observed)"
        return f"{what} {self.value:.4g} ({how})"


def _z(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def _check(alpha: float, power: float) -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if not 0.5 <= power < 1:
        raise ValueError(f"power must be in [0.5, 1), got {power}")


def no_spread_bound(n: int, alpha: float) -> float:
    """Exact one-sided (1 - alpha) upper bound on a rate of which none of n items showed an instance."""
    return 1.0 - alpha ** (1.0 / n)


def binary_power(n: int, discordance: float, drop: float, alpha: float = 0.05) -> float:
    """Exact probability that the gate's McNemar bound detects a true `drop` (its upper bound < 0).

    The discordant count M ~ Binomial(n, p) with p = max(discordance, drop); given M = m, the items the
    candidate wins C ~ Binomial(m, (p - drop) / (2p)). The exact conditional one-sided bound excludes 0 iff
    P(Binomial(m, 1/2) <= c) < alpha, i.e. c <= c*(m) = binom.ppf(alpha, m, 1/2) - 1 (Clopper-Pearson's
    duality with the binomial test); m = 0 never detects (the gate then uses the +-q bound).
    """
    from scipy.stats import binom

    p = min(max(discordance, drop), 1.0)
    lo, hi = (int(x) for x in binom.interval(1 - 1e-12, n, p))
    m = np.arange(lo, hi + 1)
    c_star = binom.ppf(alpha, m, 0.5) - 1
    win = (p - drop) / (2 * p) if p > 0 else 0.5
    return float(np.sum(binom.pmf(m, n, p) * binom.cdf(c_star, m, win)))


def binary_mde(n: int, discordance: float, alpha: float = 0.05, power: float = POWER) -> float:
    """Smallest true drop in a pass rate the exact test detects with `power` at n paired items (1.0: none)."""
    _check(alpha, power)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 < discordance <= 1:
        raise ValueError(f"discordance must be in (0, 1], got {discordance}")
    if binary_power(n, discordance, 1.0, alpha) < power:
        return 1.0
    lo, hi = 0.0, 1.0  # the power grows with the drop; bisection to 1e-6
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binary_power(n, discordance, mid, alpha) < power else (lo, mid)
    return hi


def normal_items_needed(discordance: float, drop: float, alpha: float = 0.05, power: float = POWER) -> float:
    """Connor's normal approximation of the McNemar sample size (a starting point for the exact search)."""
    za, zb = _z(1 - alpha), _z(power)
    p = max(discordance, drop)
    return ((za * math.sqrt(p) + zb * math.sqrt(max(p - drop * drop, 0.0))) / drop) ** 2


def continuous_mde(n: int, sd: float, alpha: float = 0.05, power: float = POWER) -> float:
    """Smallest true drop in a mean detected with `power` at n paired items with differences of this sd."""
    _check(alpha, power)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not sd >= 0 or not math.isfinite(sd):
        raise ValueError(f"sd must be finite and >= 0, got {sd}")
    return (_z(1 - alpha) + _z(power)) * sd / math.sqrt(n)


def mde(spread: Spread, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    if spread.kind == "binary":
        return binary_mde(n, spread.value, alpha, power)
    return continuous_mde(n, spread.value, alpha, power)


def items_needed(spread: Spread, margin: float, alpha: float = 0.05, power: float = POWER) -> int:
    """The smallest n whose MDE is at most `margin`: closed form (continuous); for binary a bisection on n
    of the exact power, bracketed by Connor's approximation (the exact power is saw-toothed in n, so the
    n returned reaches `power`; one a few items smaller may too)."""
    _check(alpha, power)
    if not margin > 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be positive, got {margin}")
    if spread.kind == "continuous":
        n = max(1, math.ceil(((_z(1 - alpha) + _z(power)) * spread.value / margin) ** 2))
        while continuous_mde(n, spread.value, alpha, power) > margin:  # float rounding at the boundary
            n += 1
        return n
    if margin > 1:
        raise ValueError(f"a drop in a pass rate is at most 1, got margin {margin}")
    guess = max(1, math.ceil(normal_items_needed(spread.value, margin, alpha, power)))
    hi = guess
    while binary_power(hi, spread.value, margin, alpha) < power:
        hi *= 2
    lo = 0  # power(lo) < target (n = 0 detects nothing), power(hi) >= target
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if binary_power(mid, spread.value, margin, alpha) < power else (lo, mid)
    return hi


def observed_spread(kind: Kind, cand: Sequence[float], base: Sequence[float], alpha: float = 0.05) -> Spread:
    """The discordance (binary) or sd of differences (continuous) of paired data, bounded away from 0."""
    c = np.asarray(cand, dtype=float)
    b = np.asarray(base, dtype=float)
    n = c.size
    if n == 0 or c.shape != b.shape:
        raise ValueError(f"need paired items, got {c.shape} and {b.shape}")
    d = c - b
    if kind == "binary":
        rate = float(np.count_nonzero(d)) / n
        return Spread(kind, rate, True) if rate > 0 else Spread(kind, no_spread_bound(n, alpha), False)
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if sd > 0:
        return Spread(kind, sd, True)
    values = np.concatenate([c, b])
    lo, hi = float(values.min()), float(values.max())
    bound = 1.0 if lo >= 0 and hi <= 1 else (hi - lo) or max(abs(lo), abs(hi))
    return Spread(kind, math.sqrt(no_spread_bound(n, alpha)) * bound, False)
