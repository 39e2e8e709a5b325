"""The sensitivity math (checks/power.py), checked by simulation with the gate's own tests and against scipy."""

import math

import numpy as np
import pytest
from scipy.stats import beta, norm

from pipeline.checks import power as pw
from pipeline.checks.stats import mcnemar_exact_lower_bound, paired_bootstrap_lower_bound


def exact_mcnemar_detection_rate(n, discordance, drop, alpha=0.05, reps=4000, seed=0):
    """Share of simulated paired 0/1 samples with a true `drop` whose exact McNemar upper bound is < 0
    (vectorised copy of stats.mcnemar_exact_lower_bound, checked against it on the first samples)."""
    rng = np.random.default_rng(seed)
    p = max(discordance, drop)
    counts = rng.multinomial(n, [(p + drop) / 2, (p - drop) / 2, 1 - p], size=reps)
    b, c = counts[:, 0], counts[:, 1]
    m = b + c
    p_upper = np.where(c == m, 1.0, beta.ppf(1 - alpha, c + 1, np.maximum(m - c, 1)))
    upper = np.where(m == 0, 1 - alpha ** (1 / n), m / n * (2 * p_upper - 1))
    for i in range(5):  # the vectorised bound is the gate's bound
        cand = [0] * b[i] + [1] * c[i] + [1] * (n - m[i])
        base = [1] * b[i] + [0] * c[i] + [1] * (n - m[i])
        assert mcnemar_exact_lower_bound(cand, base, alpha)[2] == pytest.approx(upper[i])
    return float(np.mean(upper < 0))


@pytest.mark.parametrize("n, discordance", [(44, 0.066), (120, 0.2), (400, 0.05), (200, 0.5)])
def test_binary_mde_is_detected_80_percent_of_the_time_by_the_exact_test(n, discordance):
    drop = pw.binary_mde(n, discordance)
    rate = exact_mcnemar_detection_rate(n, discordance, drop)
    assert rate == pytest.approx(0.8, abs=0.03)  # Monte-Carlo se at 4000 reps: 0.006
    assert pw.binary_power(n, discordance, drop) == pytest.approx(0.8, abs=0.002)
    # a drop 30% smaller is detected clearly less often: the MDE is the edge, not a loose bound
    assert exact_mcnemar_detection_rate(n, discordance, 0.7 * drop, seed=1) < 0.7


def test_normal_approximation_is_optimistic_for_the_exact_test():
    """Connor's formula (the usual McNemar sample size) promises 80% where the exact test reaches less."""
    n, disc = 120, 0.2
    za, zb = norm.ppf(0.95), norm.ppf(0.8)
    approx = next(d for d in np.arange(0.001, 1, 0.0005)
                  if d * math.sqrt(n) >= za * math.sqrt(disc) + zb * math.sqrt(disc - d * d))
    assert pw.normal_items_needed(disc, approx) == pytest.approx(n, rel=0.02)
    assert exact_mcnemar_detection_rate(n, disc, approx) < 0.78 < 0.8
    assert pw.binary_mde(n, disc) > approx


def test_continuous_mde_is_detected_80_percent_of_the_time_by_the_bootstrap():
    n, sd, reps = 80, 0.3, 300
    drop = pw.continuous_mde(n, sd)
    assert drop == pytest.approx((norm.ppf(0.95) + norm.ppf(0.8)) * sd / math.sqrt(n))
    rng = np.random.default_rng(7)
    detected = 0
    for i in range(reps):
        base = rng.uniform(0.2, 0.8, n)
        cand = base - drop + rng.normal(0, sd, n)
        detected += paired_bootstrap_lower_bound(cand, base, 0.05, n_resamples=1000, seed=i)[2] < 0
    assert detected / reps == pytest.approx(0.8, abs=0.07)  # Monte-Carlo se at 300 reps: 0.023


@pytest.mark.parametrize("spread", [pw.Spread("binary", 0.1, True), pw.Spread("binary", 0.4, True),
                                    pw.Spread("continuous", 0.25, True)])
@pytest.mark.parametrize("margin", [0.03, 0.05, 0.1])
def test_items_needed_is_the_n_whose_mde_meets_the_margin(spread, margin):
    n = pw.items_needed(spread, margin)
    assert pw.mde(spread, n) <= margin
    if spread.kind == "continuous":  # smooth in n: one item fewer is not enough
        assert pw.mde(spread, n - 1) > margin


def test_more_spread_or_power_needs_more_items():
    low, high = pw.Spread("binary", 0.1, True), pw.Spread("binary", 0.3, True)
    assert pw.items_needed(low, 0.05) < pw.items_needed(high, 0.05)
    assert pw.items_needed(low, 0.05, power=0.8) < pw.items_needed(low, 0.05, power=0.9)
    assert pw.items_needed(low, 0.05, alpha=0.05) < pw.items_needed(low, 0.05, alpha=0.01)


def test_no_observed_spread_is_bounded_not_zero():
    same = [1, 0] * 15
    spread = pw.observed_spread("binary", same, same, alpha=0.05)
    assert not spread.observed and spread.value == pytest.approx(1 - 0.05 ** (1 / 30))  # rule of three ~ 3/n
    assert pw.mde(spread, 30) > 0.1  # 30 identical items cannot resolve a 10-point drop
    scores = [0.5, 0.25] * 15
    cont = pw.observed_spread("continuous", scores, scores)
    assert not cont.observed and cont.value == pytest.approx(math.sqrt(spread.value))  # scores in [0, 1]: B = 1
    wide = pw.observed_spread("continuous", [10.0, 30.0] * 15, [10.0, 30.0] * 15)
    assert wide.value == pytest.approx(20 * math.sqrt(spread.value))  # else the observed range


def test_observed_spread_is_the_discordance_or_the_sd_of_differences():
    cand, base = [1, 1, 0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1, 1, 1]
    assert pw.observed_spread("binary", cand, base) == pw.Spread("binary", 2 / 8, True)
    c, b = [0.5, 0.9, 0.1, 0.7], [0.4, 0.9, 0.3, 0.6]
    assert pw.observed_spread("continuous", c, b).value == pytest.approx(np.std(np.subtract(c, b), ddof=1))


def test_tiny_samples_detect_nothing():
    assert pw.binary_mde(3, 0.5) == 1.0  # no 3-item sample rejects at alpha 0.05 with the exact test


@pytest.mark.parametrize("call", [
    lambda: pw.binary_mde(0, 0.1), lambda: pw.binary_mde(10, 0), lambda: pw.continuous_mde(10, -1),
    lambda: pw.items_needed(pw.Spread("binary", 0.1, True), 0),
    lambda: pw.items_needed(pw.Spread("binary", 0.1, True), 2),
    lambda: pw.continuous_mde(10, 1, alpha=0.7), lambda: pw.continuous_mde(10, 1, power=1.0),
])
def test_invalid_arguments_are_errors(call):
    with pytest.raises(ValueError):
        call()
