"""Non-inferiority of a candidate against the production baseline on paired per-item results (pure math).

Both models answer the same items; for each metric we bound the mean difference delta = mean(cand - base)
from both sides at one-sided level 1 - alpha (so [lower, upper] is a 1 - 2*alpha two-sided interval) and decide:

    pass          lower >= -margin      the candidate is at most `margin` worse, with confidence 1 - alpha
    fail          upper <  -margin      the candidate is more than `margin` worse, with confidence 1 - alpha
    inconclusive  otherwise             the interval straddles -margin: too few items to tell; a human decides

Binary metrics (per-item pass/fail) use an exact conditional McNemar bound; continuous ones a paired
percentile bootstrap; `infer_kind` tells which a metric is. An absolute `floor` on the candidate's mean fails
it regardless of the baseline. All metrics are higher-is-better. Every comparison also states its
sensitivity (power.py): the smallest drop it detects with 80% power, and whether the margin is below it
("underpowered"). scipy is imported inside the functions that need it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np

from pipeline.checks import power as pw
from pipeline.checks.power import Kind
from pipeline.core.decision import Decision

NO_BASELINE = "no production baseline: absolute floor only"
# lm-eval metrics whose per-item value is 0/1 by definition, and ones that are scores (fractions) by definition
BINARY_METRICS = frozenset({"acc", "acc_norm", "acc_mutual_info", "exact_match", "pass"})
CONTINUOUS_METRICS = frozenset({"f1", "bleu", "chrf", "ter", "rouge1", "rouge2", "rougeL", "rougeLsum", "brier_score",
                                "likelihood", "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"})


def infer_kind(name: str, *values: Sequence[float]) -> Kind:
    """'binary' or 'continuous' for the metric `name` ('task/metric[,filter]') with these per-item values.

    Any value other than 0/1 makes it continuous (McNemar needs pass/fail items). All values 0/1: binary,
    unless the metric is a score by its definition (CONTINUOUS_METRICS: token F1 that happened to be 0 or 1
    on every item is still a score, and keeps one method from gate to gate). Values must be finite.
    """
    metric = name.rsplit("/", 1)[-1].split(",", 1)[0]
    arrays = [np.asarray(v, dtype=float) for v in values]
    if not all(np.all(np.isin(a, (0.0, 1.0))) for a in arrays):
        return "continuous"
    return "continuous" if metric in CONTINUOUS_METRICS else "binary"


def first_non_finite(values: dict[str, float]) -> tuple[str, float] | None:
    """(item, value) of the first NaN or infinite per-item value, by item key; None when all are finite."""
    for key in sorted(values):
        if not math.isfinite(values[key]):
            return key, values[key]
    return None


def _paired(cand: Sequence[float], base: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(cand, dtype=float)
    b = np.asarray(base, dtype=float)
    if c.ndim != 1 or c.shape != b.shape:
        raise ValueError(f"paired data must be two 1-D sequences of equal length, got {c.shape} and {b.shape}")
    if c.size == 0:
        raise ValueError("no paired items")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(b))):
        raise ValueError("paired data contains NaN or infinity")
    return c, b


def paired_bootstrap_lower_bound(cand: Sequence[float], base: Sequence[float], alpha: float = 0.05,
                                 n_resamples: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """(delta, lower, upper) for delta = mean(cand - base) by the percentile bootstrap over items.

    Item indices are resampled with replacement (numpy Generator with a fixed `seed`, so a gate is
    reproducible); lower/upper are the alpha and 1 - alpha quantiles of the resampled means. The
    percentile bootstrap is approximate and covers a little less than nominal for small n (a few dozen items).
    """
    c, b = _paired(cand, base)
    d = c - b
    n = d.size
    delta = float(d.mean())
    if np.ptp(d) == 0:  # every resample has the same mean: no sampling spread
        return delta, delta, delta
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 4_000_000 // n)  # bound memory: chunk x n indices at a time
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        means[start:start + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    lower = float(np.quantile(means, alpha))
    upper = float(np.quantile(means, 1 - alpha))
    return delta, min(lower, delta), max(upper, delta)


def clopper_pearson_bounds(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact one-sided (1 - alpha) lower and upper bounds on a binomial proportion with k successes in n."""
    from scipy.stats import beta

    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    lower = 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha, k + 1, n - k))
    return lower, upper


def discordant_counts(cand: Sequence[float], base: Sequence[float]) -> tuple[int, int]:
    """(b, c): b = items the baseline passed and the candidate failed, c = the reverse."""
    c_arr, b_arr = _paired(cand, base)
    if not np.all(np.isin(c_arr, (0.0, 1.0))) or not np.all(np.isin(b_arr, (0.0, 1.0))):
        raise ValueError("binary data must be booleans or 0/1")
    cand_pass, base_pass = c_arr == 1.0, b_arr == 1.0
    return int(np.sum(base_pass & ~cand_pass)), int(np.sum(~base_pass & cand_pass))


def mcnemar_exact_lower_bound(cand: Sequence[float], base: Sequence[float],
                              alpha: float = 0.05) -> tuple[float, float, float]:
    """(delta, lower, upper) for the difference of paired pass rates, exact and conditional on discordant pairs.

    With b = base-pass/cand-fail, c = base-fail/cand-pass, m = b + c and n items, delta = (c - b) / n.
    Among the m discordant items, c ~ Binomial(m, p) and delta = (m / n) * (2p - 1) given m; the exact
    Clopper-Pearson one-sided bounds on p convert to lower = (m/n)(2 p_lower - 1), upper = (m/n)(2 p_upper - 1).
    Like McNemar's test, this treats m as fixed: it ignores the uncertainty in how often the models disagree.

    No discordant pairs (m = 0): the conditional bound degenerates to [0, 0], which would claim certainty
    from any n, even 3 items. Instead we use the exact one-sided (1 - alpha) Clopper-Pearson upper bound
    q = 1 - alpha**(1/n) on the discordance rate itself (the "rule of three": q ~ 3/n at alpha = 0.05) and
    return [-q, +q], valid unconditionally because |delta| <= P(discordant). The price: with few items an
    identical candidate is inconclusive against a tight margin (n = 44: q = 0.066), and this bound is wider
    than the conditional one after one or two discordant items; more items fix both.
    """
    b, c = discordant_counts(cand, base)
    n = len(cand)
    m = b + c
    delta = (c - b) / n
    if m == 0:
        q = 1.0 - alpha ** (1.0 / n)
        return 0.0, -q, q
    p_lower, p_upper = clopper_pearson_bounds(c, m, alpha)
    return delta, m / n * (2 * p_lower - 1), m / n * (2 * p_upper - 1)


def exact_mcnemar_pvalue(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of c among b + c discordant pairs against p = 1/2."""
    from scipy.stats import binom

    m = b + c
    if m == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(b, c), m, 0.5)))


def noninferiority(lower: float, upper: float, margin: float) -> Decision:
    """pass if lower >= -margin; fail if upper < -margin; inconclusive otherwise (see the module docstring)."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if lower >= -margin:
        return Decision.PASS
    if upper < -margin:
        return Decision.FAIL
    return Decision.INCONCLUSIVE


@dataclass
class MetricComparison:
    name: str
    kind: str  # binary | continuous
    n: int
    candidate_mean: float | None
    baseline_mean: float | None  # None: no baseline (absolute floor only)
    delta: float | None
    lower: float | None  # one-sided (1 - alpha) bounds on delta
    upper: float | None
    margin: float | None
    floor: float | None
    verdict: Decision
    reasons: list[str] = field(default_factory=list)
    method: str = ""
    alpha: float = 0.05
    p_value: float | None = None  # exact McNemar two-sided, binary only (for the report; not the decision)
    # sensitivity (power.py): the smallest true drop detected with `power` at this n and alpha, from the
    # observed discordance (binary) or sd of per-item differences (continuous); None without a baseline
    mde: float | None = None
    power: float = pw.POWER
    underpowered: bool | None = None  # margin < mde: drops up to mde could have been missed
    discordance: float | None = None  # discordant-pair rate (binary; its upper bound when none was observed)
    sd_diff: float | None = None  # sd of per-item differences (continuous; likewise)
    items_needed: int | None = None  # paired items the margin needs for `power` at this spread
    power_flag: str | None = None  # a replay check's: "no power" | "low power" (checks/replay_power.py)

    def to_dict(self) -> dict[str, Any]:
        """The row report.json and comparison.csv hold (`power_flag` only where a replay check set it)."""
        row = asdict(self)
        if row["power_flag"] is None:
            del row["power_flag"]
        return row

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> MetricComparison:
        """A row as a report holds it. Rows written before a field existed (`kind`, the sensitivity, the power
        flag) read with its default, or None; a malformed row is a KeyError or ValueError."""
        values: dict[str, Any] = {f.name: None for f in fields(cls)
                                  if f.default is MISSING and f.default_factory is MISSING}
        values.update({k: v for k, v in row.items() if k in _FIELDS})
        values["power_flag"] = row.get("power_flag") or row.get("flag")
        return cls(**{**values, "name": str(row["name"]), "verdict": Decision(row["verdict"]),
                      "kind": str(values["kind"] or ""), "n": int(values["n"] or 0),
                      "reasons": [str(r) for r in row.get("reasons") or ()]})


_FIELDS = frozenset(f.name for f in fields(MetricComparison))


_EXPLAIN = {
    Decision.PASS: "non-inferior (lower bound >= -margin)",
    Decision.FAIL: "worse than the margin allows (upper bound < -margin)",
    Decision.INCONCLUSIVE: "inconclusive (the interval straddles -margin: more items or a release manager's call)",
}


def compare_metric(name: str, cand: Sequence[float], base: Sequence[float], margin: float,
                   floor: float | None, kind: Kind, *, alpha: float = 0.05,
                   n_resamples: int = 10000, seed: int = 0, power: float = pw.POWER) -> MetricComparison:
    """Candidate vs baseline on paired items; a candidate mean below `floor` fails whatever the baseline."""
    if kind not in ("binary", "continuous"):
        raise ValueError(f"kind must be 'binary' or 'continuous', got {kind!r}")
    if len(cand) == 0 and len(base) == 0:
        return MetricComparison(name, kind, 0, None, None, None, None, None, margin, floor, Decision.INCONCLUSIVE,
                                [f"{name}: no paired items to compare"], alpha=alpha)
    c_arr, b_arr = _paired(cand, base)
    p_value = None
    if kind == "binary":
        delta, lower, upper = mcnemar_exact_lower_bound(cand, base, alpha)
        p_value = exact_mcnemar_pvalue(*discordant_counts(cand, base))
        method = "exact conditional McNemar (Clopper-Pearson on discordant pairs)"
    else:
        delta, lower, upper = paired_bootstrap_lower_bound(cand, base, alpha, n_resamples, seed)
        method = f"paired percentile bootstrap ({n_resamples} resamples, seed {seed})"
    decision = noninferiority(lower, upper, margin)
    cand_mean, base_mean = float(c_arr.mean()), float(b_arr.mean())
    conf = _percent(1 - alpha)
    reasons = [f"{name}: candidate {cand_mean:.4g} vs baseline {base_mean:.4g} on {c_arr.size} items, "
               f"delta {delta:+.4g}, one-sided {conf} bounds [{lower:+.4g}, {upper:+.4g}], margin {margin:g}: "
               f"{_EXPLAIN[decision]}"]
    verdict: Decision = decision
    if floor is not None and cand_mean < floor:
        verdict = Decision.FAIL
        reasons.append(f"{name}: candidate {cand_mean:.4g} is below the absolute floor {floor:g}")
    spread = pw.observed_spread(kind, cand, base, alpha)
    mde = pw.mde(spread, int(c_arr.size), alpha, power)
    underpowered = margin < mde
    needed = pw.items_needed(spread, margin, alpha, power) if margin > 0 and (kind == "continuous" or margin <= 1) \
        else None
    if underpowered and verdict != Decision.FAIL:  # a rejected metric was detected: nothing was missed there
        reasons.append(underpowered_note(name, margin, mde, int(c_arr.size), alpha, power, needed))
    return MetricComparison(name, kind, int(c_arr.size), cand_mean, base_mean, delta, lower, upper, margin,
                            floor, verdict, reasons, method, alpha, p_value, mde=mde, power=power,
                            underpowered=underpowered,
                            discordance=spread.value if kind == "binary" else None,
                            sd_diff=spread.value if kind == "continuous" else None, items_needed=needed)


def underpowered_note(name: str, margin: float, mde: float, n: int, alpha: float, power: float,
                      needed: int | None) -> str:
    more = f"; about {needed} paired items would resolve it" if needed else ""
    return (f"{name}: underpowered: margin {margin:g} is below the smallest drop this gate detects with "
            f"{_percent(power)} power ({mde:.3g} at n={n}, alpha {alpha:g}): it could have missed drops up to "
            f"{mde:.3g}{more}")


def absolute_only(name: str, cand: Sequence[float], floor: float | None,
                  kind: Kind = "binary") -> MetricComparison:
    """First release (no baseline): pass/fail on the absolute floor alone."""
    values = np.asarray(cand, dtype=float)
    reasons = [NO_BASELINE]
    if values.size == 0:
        return MetricComparison(name, kind, 0, None, None, None, None, None, None, floor, Decision.INCONCLUSIVE,
                                reasons + [f"{name}: no items"], "absolute floor")
    mean = float(values.mean())
    if floor is None:
        verdict: Decision = Decision.PASS
        reasons.append(f"{name}: candidate {mean:.4g}, no floor configured")
    elif mean < floor:
        verdict = Decision.FAIL
        reasons.append(f"{name}: candidate {mean:.4g} is below the absolute floor {floor:g}")
    else:
        verdict = Decision.PASS
        reasons.append(f"{name}: candidate {mean:.4g} meets the absolute floor {floor:g}")
    return MetricComparison(name, kind, int(values.size), mean, None, None, None, None, None, floor, verdict,
                            reasons, "absolute floor")


def _percent(x: float) -> str:
    return f"{x * 100:g}%" if math.isfinite(x) else "?"
