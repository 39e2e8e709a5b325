"""pipeline.checks.stats checked against independent computations with scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from pipeline.checks.stats import (
    NO_BASELINE,
    absolute_only,
    clopper_pearson_bounds,
    compare_metric,
    discordant_counts,
    exact_mcnemar_pvalue,
    mcnemar_exact_lower_bound,
    noninferiority,
    paired_bootstrap_lower_bound,
)


def paired_bools(b: int, c: int, both_pass: int, both_fail: int) -> tuple[list[bool], list[bool]]:
    """(cand, base) with b base-pass/cand-fail items and c base-fail/cand-pass items."""
    cand = [False] * b + [True] * c + [True] * both_pass + [False] * both_fail
    base = [True] * b + [False] * c + [True] * both_pass + [False] * both_fail
    return cand, base


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (3, 37), (17, 20), (0, 1), (1, 1)])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_clopper_pearson_matches_scipy_exact_interval(k, n, alpha):
    lower, upper = clopper_pearson_bounds(k, n, alpha)
    # a one-sided (1 - alpha) bound is one end of the two-sided (1 - 2 alpha) exact interval
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert lower == pytest.approx(ci.low, abs=1e-9)
    assert upper == pytest.approx(ci.high, abs=1e-9)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (1, 0), (3, 3), (2, 9), (9, 2), (0, 12), (25, 31), (1, 40)])
def test_exact_mcnemar_pvalue_matches_binomtest(b, c):
    expected = 1.0 if b + c == 0 else sps.binomtest(c, b + c, 0.5).pvalue
    assert exact_mcnemar_pvalue(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("b,c,concordant", [(3, 1, 40), (0, 5, 20), (6, 0, 10), (10, 10, 80)])
def test_mcnemar_bounds_are_the_converted_clopper_pearson_bounds(b, c, concordant):
    cand, base = paired_bools(b, c, concordant // 2, concordant - concordant // 2)
    n = len(cand)
    delta, lower, upper = mcnemar_exact_lower_bound(cand, base, alpha=0.05)
    assert discordant_counts(cand, base) == (b, c)
    assert delta == pytest.approx((c - b) / n)
    ci = sps.binomtest(c, b + c).proportion_ci(confidence_level=0.90, method="exact")
    m = b + c
    assert lower == pytest.approx(m / n * (2 * ci.low - 1), abs=1e-9)
    assert upper == pytest.approx(m / n * (2 * ci.high - 1), abs=1e-9)
    assert lower <= delta <= upper


def test_mcnemar_no_discordant_pairs_uses_the_rule_of_three_bound():
    cand, base = paired_bools(0, 0, 30, 14)
    delta, lower, upper = mcnemar_exact_lower_bound(cand, base, alpha=0.05)
    # exact one-sided 95% upper bound on the discordance rate with 0 of 44 discordant
    q = sps.binomtest(0, 44).proportion_ci(confidence_level=0.90, method="exact").high
    assert delta == 0.0
    assert lower == pytest.approx(-q) and upper == pytest.approx(q)
    assert q == pytest.approx(3 / 44, rel=0.05)  # the rule of three
    # many identical items: the bound tightens and identical results pass a 1-point margin
    cand, base = paired_bools(0, 0, 500, 500)
    _, lower, upper = mcnemar_exact_lower_bound(cand, base)
    assert noninferiority(lower, upper, margin=0.01) == "pass"


def test_mcnemar_rejects_non_binary_data():
    with pytest.raises(ValueError):
        mcnemar_exact_lower_bound([0.5, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError):
        mcnemar_exact_lower_bound([True], [True, False])


def test_bootstrap_bounds_close_to_scipy_percentile_bootstrap():
    rng = np.random.default_rng(42)
    base = rng.normal(0.70, 0.10, size=200)
    cand = base + rng.normal(-0.01, 0.05, size=200)
    delta, lower, upper = paired_bootstrap_lower_bound(cand, base, alpha=0.05, n_resamples=10000, seed=1)
    diffs = cand - base
    res = sps.bootstrap((diffs,), np.mean, confidence_level=0.90, method="percentile",
                        n_resamples=10000, random_state=np.random.default_rng(7))
    se = diffs.std(ddof=1) / np.sqrt(diffs.size)
    assert delta == pytest.approx(diffs.mean())
    # two independent Monte Carlo runs of the same estimator: agree to a small fraction of a standard error
    assert lower == pytest.approx(res.confidence_interval.low, abs=0.1 * se)
    assert upper == pytest.approx(res.confidence_interval.high, abs=0.1 * se)
    # and the normal approximation agrees roughly too
    assert lower == pytest.approx(diffs.mean() - 1.645 * se, abs=0.15 * se)


def test_bootstrap_is_reproducible_and_handles_constant_differences():
    cand, base = [0.9, 0.5, 0.7, 0.6], [0.8, 0.5, 0.75, 0.4]
    assert paired_bootstrap_lower_bound(cand, base, seed=3) == paired_bootstrap_lower_bound(cand, base, seed=3)
    assert paired_bootstrap_lower_bound([0.5, 0.7], [0.4, 0.6]) == pytest.approx((0.1, 0.1, 0.1))
    with pytest.raises(ValueError):
        paired_bootstrap_lower_bound([], [])
    with pytest.raises(ValueError):
        paired_bootstrap_lower_bound([1.0, 2.0], [1.0])


@pytest.mark.parametrize("lower,upper,margin,expected", [
    (-0.01, 0.02, 0.05, "pass"),
    (-0.05, 0.02, 0.05, "pass"),  # on the margin counts as non-inferior
    (-0.20, -0.08, 0.05, "fail"),
    (-0.08, 0.01, 0.05, "inconclusive"),
    (0.0, 0.0, 0.0, "pass"),
])
def test_noninferiority_decision(lower, upper, margin, expected):
    assert noninferiority(lower, upper, margin) == expected


def test_noninferiority_rejects_negative_margin():
    with pytest.raises(ValueError):
        noninferiority(0.0, 0.0, -0.1)


def test_compare_binary_clear_pass():
    cand, base = paired_bools(2, 3, 900, 95)  # 1000 items, nearly identical
    result = compare_metric("format_pass_rate", cand, base, margin=0.02, floor=0.5, kind="binary")
    assert result.verdict == "pass"
    assert result.n == 1000 and result.p_value == pytest.approx(1.0)
    assert result.baseline_mean == pytest.approx(0.902) and result.candidate_mean == pytest.approx(0.903)


def test_compare_binary_clear_fail():
    cand, base = paired_bools(60, 2, 100, 38)  # the candidate lost 60 of 200 items
    result = compare_metric("format_pass_rate", cand, base, margin=0.05, floor=None, kind="binary")
    assert result.verdict == "fail"
    assert result.upper < -0.05
    assert result.p_value == pytest.approx(sps.binomtest(2, 62, 0.5).pvalue)


def test_compare_binary_inconclusive_with_few_items():
    cand, base = paired_bools(3, 1, 10, 6)  # 20 items: delta -0.1, interval straddles -margin
    result = compare_metric("format_pass_rate", cand, base, margin=0.05, floor=None, kind="binary")
    assert result.verdict == "inconclusive"
    assert result.lower < -0.05 <= result.upper
    assert "inconclusive" in result.reasons[0]


def test_compare_identical_data():
    values = [0.4, 0.9, 0.7, 0.55, 0.8] * 20
    cont = compare_metric("rougeL", values, values, margin=0.01, floor=None, kind="continuous")
    assert (cont.verdict, cont.delta, cont.lower, cont.upper) == ("pass", 0.0, 0.0, 0.0)
    flags = [True, False, True, True] * 250
    binary = compare_metric("exact_match", flags, flags, margin=0.01, floor=None, kind="binary")
    assert binary.verdict == "pass" and binary.delta == 0.0
    assert binary.lower == pytest.approx(-(1 - 0.05 ** (1 / 1000)))


def test_compare_continuous_clear_pass_and_fail():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.9, size=300)
    better = base + rng.normal(0.0, 0.01, size=300)
    assert compare_metric("acc", better, base, margin=0.02, floor=None, kind="continuous").verdict == "pass"
    worse = base - 0.2 + rng.normal(0.0, 0.01, size=300)
    result = compare_metric("acc", worse, base, margin=0.02, floor=None, kind="continuous")
    assert result.verdict == "fail" and result.upper < -0.02


def test_floor_fails_regardless_of_baseline():
    cand, base = paired_bools(0, 0, 40, 60)  # identical, but only 40% pass
    result = compare_metric("format_pass_rate", cand, base, margin=0.5, floor=0.8, kind="binary")
    assert result.verdict == "fail"
    assert any("floor" in r for r in result.reasons)


def test_absolute_only_first_release():
    ok = absolute_only("format_pass_rate", [True] * 9 + [False], floor=0.8)
    assert ok.verdict == "pass" and ok.baseline_mean is None and ok.reasons[0] == NO_BASELINE
    low = absolute_only("format_pass_rate", [True] * 5 + [False] * 5, floor=0.8)
    assert low.verdict == "fail" and low.candidate_mean == pytest.approx(0.5)
    assert absolute_only("acc", [0.1], floor=None).verdict == "pass"
    assert absolute_only("acc", [], floor=0.5).verdict == "inconclusive"


def test_to_dict_is_plain_data():
    d = compare_metric("m", [1.0, 0.0], [1.0, 1.0], margin=0.1, floor=None, kind="binary").to_dict()
    assert set(d) >= {"name", "baseline_mean", "candidate_mean", "delta", "lower", "upper", "margin", "n",
                      "floor", "verdict", "reasons"}


@pytest.mark.parametrize("name, values, expected", [
    ("t/acc", ([1, 0, 1], [0, 0, 1]), "binary"),
    ("format/pass", ([True, False],), "binary"),
    ("t/exact_match", ([1.0, 0.5],), "continuous"),  # a fraction: McNemar cannot take it, whatever the name
    ("t/score", ([0, 1], [0.25, 1]), "continuous"),  # either side
    ("t/f1", ([0, 1, 1],), "continuous"),  # a score by definition, even when every item scored 0 or 1
    ("t/rougeL,none", ([1, 0],), "continuous"),
    ("t/my_check", ([0, 1, 1],), "binary"),  # unknown name: the values decide
])
def test_infer_kind_from_values_and_task_metric(name, values, expected):
    from pipeline.checks.stats import infer_kind

    assert infer_kind(name, *values) == expected


def test_compare_records_sensitivity_and_flags_an_underpowered_margin():
    cand, base = [1] * 40 + [0] * 10, [1] * 36 + [0] * 4 + [1] * 4 + [0] * 6
    ok = compare_metric("t/acc", cand, base, margin=0.3, floor=None, kind="binary")
    tight = compare_metric("t/acc", cand, base, margin=0.01, floor=None, kind="binary")
    assert ok.mde == tight.mde and ok.discordance == pytest.approx(8 / 50) and ok.sd_diff is None
    assert ok.underpowered is False and not any("underpowered" in r for r in ok.reasons)
    assert tight.underpowered is True and any("could have missed drops up to" in r for r in tight.reasons)
    assert tight.verdict == "inconclusive"  # the flag explains the verdict; it never changes it
    worse = compare_metric("t/acc", [0] * 25 + [1] * 25, base, margin=0.01, floor=None, kind="binary")
    assert worse.verdict == "fail" and worse.underpowered is True  # rejected: detected, so no "could have missed"
    assert not any("underpowered" in r for r in worse.reasons)
