"""Rank comparison of two independent samples (pipeline/checks/shift.py): the Mann-Whitney critical values, the
Hodges-Lehmann shift and its bounds against scipy's test, and false alarms / detection on synthetic latencies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from pipeline.checks import shift


@pytest.mark.parametrize("n, m, table", [(5, 5, 4), (10, 10, 27), (8, 12, 26), (20, 20, 138)])
def test_exact_critical_values_match_the_published_one_tailed_table(n, m, table):
    """Published one-tailed 0.05 critical values are the largest lower-tail U; ours is the upper-tail u*."""
    assert shift.critical_u(n, m, 0.05) == n * m - table


def test_normal_approximation_meets_the_exact_count_where_they_hand_over():
    n = m = 50  # n*m = EXACT_MAX_PAIRS
    exact = shift.critical_u(n, m, 0.05)
    sigma = math.sqrt(n * m * (n + m + 1) / 12)
    normal = math.ceil(n * m / 2 + 0.5 + 1.6448536 * sigma)
    assert abs(exact - normal) <= 1 and shift.critical_u(51, 50, 0.05) == math.ceil(51 * 50 / 2 + 0.5 + 1.6448536
                                                                                  * math.sqrt(51 * 50 * 102 / 12))


@pytest.mark.parametrize("n, m, method", [(8, 10, "exact"), (30, 40, "exact"), (120, 100, "asymptotic")])
def test_bounds_invert_scipys_one_sided_mann_whitney_test(n, m, method):
    """Every log-shift below the lower bound is rejected by scipy's one-sided test at alpha, the bound itself
    not; the same for the upper bound from the other side."""
    rng = np.random.default_rng(n)
    x, y = rng.lognormal(0.1, 0.3, n), rng.lognormal(0.0, 0.3, m)
    s = shift.log_shift(x, y, alpha=0.05)
    lo, hi = math.log1p(s.lower_pct / 100), math.log1p(s.upper_pct / 100)
    lx, ly = np.log(x), np.log(y)

    def p(delta, alternative):
        return mannwhitneyu(lx - delta, ly, alternative=alternative, method=method).pvalue

    assert p(lo - 1e-9, "greater") <= 0.05 < p(lo + 1e-9, "greater")
    assert p(hi + 1e-9, "less") <= 0.05 < p(hi - 1e-9, "less")
    assert s.lower_pct < s.estimate_pct < s.upper_pct
    assert s.p_greater == pytest.approx(mannwhitneyu(lx, ly, alternative="greater").pvalue)


def test_hodges_lehmann_estimate_of_a_pure_ratio_is_that_ratio():
    base = [100.0, 130.0, 90.0, 170.0, 110.0, 95.0, 150.0]
    s = shift.log_shift([1.25 * v for v in base], base)
    assert s.estimate_pct == pytest.approx(25.0)
    assert shift.log_shift(base, base).estimate_pct == pytest.approx(0.0)


def test_too_few_values_give_no_bound_and_bad_values_are_refused():
    s = shift.log_shift([1.0, 2.0], [1.0, 2.0])
    assert s.lower_pct is None and s.upper_pct is None
    with pytest.raises(ValueError, match="positive"):
        shift.log_shift([1.0, 0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-empty"):
        shift.log_shift([], [1.0])


def test_a_a_identical_distributions_false_alarm_rate_is_at_most_alpha():
    """500 synthetic A/A pairs (16 vs 16 requests, lognormal, CV ~30%): "slower at all" (lower bound > 0%) about
    alpha of the time or less; "slower by more than 20%" never."""
    rng = np.random.default_rng(7)
    any_slower = over_threshold = 0
    for _ in range(500):
        s = shift.log_shift(rng.lognormal(7.0, 0.3, 16), rng.lognormal(7.0, 0.3, 16), alpha=0.05)
        any_slower += s.lower_pct > 0
        over_threshold += s.lower_pct > 20
    assert any_slower <= 0.05 * 500 + 3 * math.sqrt(500 * 0.05 * 0.95)  # alpha + 3 standard errors
    assert over_threshold == 0


def test_a_1_5x_slower_distribution_is_caught():
    rng = np.random.default_rng(11)
    caught = sum(shift.log_shift(1.5 * rng.lognormal(7.0, 0.15, 16), rng.lognormal(7.0, 0.15, 16)).lower_pct > 20
                 for _ in range(200))
    assert caught >= 190
