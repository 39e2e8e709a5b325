"""Load-test arithmetic, no I/O: per-level summaries of the serving benchmark's JSON, SLO checks, the shape of the
degradation curve, regressions against the baseline's load results, and cost per million output tokens. The
hardware and serving fingerprint is read by serving/fingerprint.py and compared by checks/fingerprint.py.

Rules (documented in docs/stages.md, `load` row):
- A level fails when any request failed (more than `slo.max_failed`, default 0) or a configured SLO is missed:
  `p95_e2el_ms`, `p95_ttft_ms`, `p95_tpot_ms` are maxima, `min_output_throughput` (tokens/s) a minimum.
- Curve shape between adjacent levels: with a closed loop of N concurrent clients on a saturated server,
  latency grows about in proportion to N (Little's law) while throughput stays flat. The curve is a *cliff*
  when p95 e2e latency grows more than CLIFF_FACTOR x the concurrency ratio, or output throughput drops by
  more than CLIFF_THROUGHPUT_DROP, between two adjacent levels (the server collapses instead of queueing);
  otherwise *gradual*. The shape is reported, not gated.
- Regression: only when the fingerprints match: the hardware (CPU model and count, GPU model and count, vLLM
  version) and the serving configuration the server was really started with (read from its command line and
  environment: eager or compiled, dtype, quantization, max_model_len, max_num_seqs, KV cache size and dtype,
  tensor/pipeline parallel size, any other server argument). When they differ the comparison is skipped, saying
  so in words and then per field (`not comparable: compilation mode differs`, `serving.enforce_eager: False
  (baseline) != True (candidate)`); the SLOs still apply. Every level's report line says whether it was compared,
  against which production version and run, and why not. At a level both ran (same concurrency), the candidate's
  per-request latencies are compared with the ones production's gate recorded (pipeline/checks/shift.py: a
  Mann-Whitney rank test and the Hodges-Lehmann shift of log latencies, one-sided bounds at confidence 1 - alpha,
  alpha = `gates.alpha`): the level regresses only when the lower bound of the e2e latency increase exceeds
  `regression_pct` percent, or the upper bound of the change in per-request output tokens/s is below
  -`regression_pct` percent (with the same concurrency on both sides the server's output throughput is
  concurrency x the per-request rate). An interval that straddles the threshold is reported, not failed. TTFT is
  compared the same way and reported, not gated. When production's run recorded no per-request latencies (older
  gates) or a side has too few requests for a bound, the level falls back to one measurement each side: p95 e2e
  latency more than `regression_pct` percent above the baseline's, or output throughput that much below, fails.
- Cost: price_per_hour / (output tokens/s x 3600) x 1e6, at the best output throughput of the levels that met
  every SLO (the capacity that can be sold within the SLO); when none did, the best of all levels.
"""

from __future__ import annotations

import itertools
from typing import Any

from pipeline.checks import shift
from pipeline.config.release import LoadSlo
from pipeline.core.decision import Decision

ALPHA = 0.05  # default alpha: each one-sided bound of a per-request comparison holds with confidence 1 - alpha
CLIFF_FACTOR = 1.5
CLIFF_THROUGHPUT_DROP = 0.20
LATENCY_FIELDS = tuple(f"p{p}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for p in (50, 95, 99))
RATE_FIELDS = ("request_throughput", "output_throughput", "total_token_throughput", "duration")


def label(multiplier: float) -> str:
    return f"{multiplier:g}x"


def level_summary(multiplier: float, concurrency: int, result: dict[str, Any],
                  server: dict[str, float] | None = None) -> dict[str, Any]:
    """One level's row: the benchmark's counts, rates and percentiles, plus the server-side gauges."""
    row: dict[str, Any] = {"level": label(multiplier), "multiplier": multiplier, "concurrency": concurrency,
                           "completed": int(result.get("completed", 0)), "failed": int(result.get("failed", 0)),
                           "num_prompts": int(result.get("num_prompts", 0))}
    for key in (*RATE_FIELDS, *LATENCY_FIELDS):
        if isinstance(result.get(key), (int, float)):
            row[key] = float(result[key])
    missing = row["num_prompts"] - row["completed"] - row["failed"]
    if missing > 0:  # requests neither completed nor reported failed still count against the level
        row["failed"] += missing
    row["server"] = dict(server or {})
    samples = request_samples(result)
    if samples is not None:
        row["samples"] = samples
    return row


def request_samples(result: dict[str, Any]) -> dict[str, list[float]] | None:
    """The successful requests' e2e latency and TTFT (ms) and output tokens, in request order, from the
    benchmark's detailed result (`--save-detailed`: `latencies`/`ttfts` in seconds, `output_lens`, `errors`);
    None when it holds none (a result saved without details)."""
    lat, ttft, out = result.get("latencies"), result.get("ttfts"), result.get("output_lens")
    if not isinstance(lat, list) or not isinstance(ttft, list) or not isinstance(out, list):
        return None
    errors = result.get("errors") or [""] * len(lat)
    keep = [i for i in range(min(len(lat), len(ttft), len(out), len(errors)))
            if not errors[i] and isinstance(lat[i], (int, float)) and lat[i] > 0 and out[i]]
    return {"e2el_ms": [round(1000.0 * lat[i], 3) for i in keep],
            "ttft_ms": [round(1000.0 * ttft[i], 3) for i in keep],
            "output_tokens": [int(out[i]) for i in keep]}


def check_level(row: dict[str, Any], slo: LoadSlo) -> list[str]:
    """The SLOs this level missed, each naming the level and the limit."""
    lvl = row["level"]
    out = []
    if row["failed"] > slo.max_failed:
        out.append(f"load {lvl}: {row['failed']} of {row['num_prompts']} request(s) failed "
                   f"(max_failed {slo.max_failed})")
    for key in ("p95_e2el_ms", "p95_ttft_ms", "p95_tpot_ms"):
        limit = getattr(slo, key)
        if limit is None:
            continue
        value = row.get(key)
        if value is None or value > limit:
            shown = "not measured" if value is None else f"{value:.0f}"
            out.append(f"load {lvl}: {key} {shown} > SLO {limit:g}")
    if slo.min_output_throughput is not None:
        value = row.get("output_throughput", 0.0)
        if value < slo.min_output_throughput:
            out.append(f"load {lvl}: output_throughput {value:.1f} tok/s < SLO {slo.min_output_throughput:g}")
    return out


def curve_shape(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """'gradual' or 'cliff' (see the module docstring), with the step that made it a cliff."""
    steps = []
    shape = "gradual" if len(rows) > 1 else "single level"
    for prev, cur in itertools.pairwise(rows):
        load_ratio = cur["concurrency"] / prev["concurrency"]
        lat_ratio = _ratio(cur.get("p95_e2el_ms"), prev.get("p95_e2el_ms"))
        tput_ratio = _ratio(cur.get("output_throughput"), prev.get("output_throughput"))
        cliff = (lat_ratio is not None and lat_ratio > CLIFF_FACTOR * load_ratio) or \
            (tput_ratio is not None and tput_ratio < 1 - CLIFF_THROUGHPUT_DROP)
        steps.append({"from": prev["level"], "to": cur["level"], "concurrency_ratio": round(load_ratio, 3),
                      "p95_e2el_ratio": _round(lat_ratio), "output_throughput_ratio": _round(tput_ratio),
                      "cliff": cliff})
        if cliff:
            shape = "cliff"
    return {"shape": shape, "steps": steps, "cliff_factor": CLIFF_FACTOR,
            "cliff_throughput_drop": CLIFF_THROUGHPUT_DROP}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def regressions(rows: list[dict[str, Any]], baseline_rows: list[dict[str, Any]], pct: float) -> list[str]:
    """The fallback: one measurement each side (p95 e2e latency, output throughput) against `pct`."""
    base = {r["level"]: r for r in baseline_rows}
    out = []
    for row in rows:
        b = base.get(row["level"])
        if b is None or b.get("concurrency") != row["concurrency"]:
            continue
        out += point_regressions(row, b, pct)
    return out


def point_regressions(row: dict[str, Any], b: dict[str, Any], pct: float) -> list[str]:
    out = []
    lat, blat = row.get("p95_e2el_ms"), b.get("p95_e2el_ms")
    if lat is not None and blat and lat > blat * (1 + pct / 100):
        out.append(f"load {row['level']}: p95_e2el_ms {lat:.0f} is {100 * (lat / blat - 1):.0f}% above the "
                   f"baseline's {blat:.0f} (regression_pct {pct:g})")
    tput, btput = row.get("output_throughput"), b.get("output_throughput")
    if tput is not None and btput and tput < btput * (1 - pct / 100):
        out.append(f"load {row['level']}: output_throughput {tput:.1f} tok/s is {100 * (1 - tput / btput):.0f}% "
                   f"below the baseline's {btput:.1f} (regression_pct {pct:g})")
    return out


def _change_pct(a: float | None, b: float | None) -> float | None:
    r = _ratio(a, b)
    return None if r is None else round(100 * (r - 1), 2)


def _tok_per_s(samples: dict[str, list[float]]) -> list[float]:
    return [1000.0 * t / ms for t, ms in zip(samples["output_tokens"], samples["e2el_ms"], strict=True)]


# how a load comparison's decision reads in notes and reports
WORDS = {Decision.PASS: "within threshold", Decision.FAIL: "regressed", Decision.INCONCLUSIVE: "inconclusive"}


def increase_decision(lower_pct: float | None, upper_pct: float | None, pct: float) -> Decision:
    """Higher is worse (latency): fail when the change's lower bound is above +pct, pass when its upper bound is
    within it, else inconclusive (the load comparison's rule; watch applies it to histogram buckets too)."""
    if lower_pct is not None and lower_pct > pct:
        return Decision.FAIL
    return Decision.PASS if upper_pct is not None and upper_pct <= pct else Decision.INCONCLUSIVE


def _verdict_up(s: shift.Shift, pct: float) -> Decision:
    """Higher is worse (latency)."""
    return increase_decision(s.lower_pct, s.upper_pct, pct)


def _verdict_down(s: shift.Shift, pct: float) -> Decision:
    """Lower is worse (throughput)."""
    if s.upper_pct is not None and s.upper_pct < -pct:
        return Decision.FAIL
    return Decision.PASS if s.lower_pct is not None and s.lower_pct >= -pct else Decision.INCONCLUSIVE


def compare_level(row: dict[str, Any], b: dict[str, Any] | None, pct: float,
                  alpha: float = ALPHA) -> tuple[dict[str, Any], list[str]]:
    """One level against production's row at the same level: (record for the report, failure reasons).

    record: level, compared (bool), reason when not; method "rank" (per-request, see the module docstring) or
    "p95" (the fallback, with `fallback_reason`); for "rank" the e2el / output_tok_s / ttft shifts (Shift.as_dict:
    estimate and bounds in %), threshold_pct, confidence; verdict a Decision: fail (regressed), pass (within
    threshold) or inconclusive (the interval straddles the threshold: not failed); WORDS says how each reads.
    """
    lvl = row["level"]
    rec: dict[str, Any] = {"level": lvl, "threshold_pct": pct}
    if b is None:
        return {**rec, "compared": False, "reason": "production's gate did not run this level"}, []
    if load_of(b) != load_of(row):
        return {**rec, "compared": False, "reason": f"production ran {lvl} at {describe_load(b)}, "
                                                    f"this gate at {describe_load(row)}"}, []
    mine, theirs = row.get("samples"), b.get("samples")
    fallback = None
    if not theirs or not theirs.get("e2el_ms"):
        fallback = "production's run recorded no per-request latencies"
    elif not mine or not mine.get("e2el_ms"):
        fallback = "this run has no per-request latencies"
    elif shift.critical_u(len(mine["e2el_ms"]), len(theirs["e2el_ms"]), alpha) > \
            len(mine["e2el_ms"]) * len(theirs["e2el_ms"]):
        fallback = (f"too few requests for a bound at {100 * (1 - alpha):g}% confidence "
                    f"({len(mine['e2el_ms'])} vs {len(theirs['e2el_ms'])})")
    if fallback is not None:
        failures = point_regressions(row, b, pct)
        changes = {k: _change_pct(row.get(k), b.get(k)) for k in ("p95_e2el_ms", "output_throughput")}
        return {**rec, "compared": True, "method": "p95", "fallback_reason": fallback,
                "p95_e2el_change_pct": changes["p95_e2el_ms"],
                "output_throughput_change_pct": changes["output_throughput"],
                "verdict": Decision.FAIL if failures else Decision.PASS}, failures
    assert mine is not None and theirs is not None
    e2el = shift.log_shift(mine["e2el_ms"], theirs["e2el_ms"], alpha)
    tput = shift.log_shift(_tok_per_s(mine), _tok_per_s(theirs), alpha)
    ttft = shift.log_shift([max(v, 1e-3) for v in mine["ttft_ms"]], [max(v, 1e-3) for v in theirs["ttft_ms"]],
                           alpha)
    verdicts = {"e2el": _verdict_up(e2el, pct), "output_tok_s": _verdict_down(tput, pct)}
    failures = []
    conf = f"{100 * (1 - alpha):g}%"
    if verdicts["e2el"] == Decision.FAIL:
        failures.append(f"load {lvl}: e2e latency is {e2el.estimate_pct:+.0f}% vs production (at least "
                        f"{e2el.lower_pct:+.1f}% with {conf} confidence, {e2el.n_candidate} vs {e2el.n_baseline} "
                        f"requests) > regression_pct {pct:g}")
    if verdicts["output_tok_s"] == Decision.FAIL:
        failures.append(f"load {lvl}: per-request output tok/s is {tput.estimate_pct:+.0f}% vs production (at "
                        f"most {tput.upper_pct:+.1f}% with {conf} confidence, {tput.n_candidate} vs "
                        f"{tput.n_baseline} requests) < -regression_pct {pct:g}")
    verdict = Decision.FAIL if failures else (
        Decision.PASS if all(v == Decision.PASS for v in verdicts.values()) else Decision.INCONCLUSIVE)
    return {**rec, "compared": True, "method": "rank", "confidence": 1 - alpha, "e2el": e2el.as_dict(),
            "output_tok_s": tput.as_dict(), "ttft": ttft.as_dict(), "verdicts": verdicts,
            "verdict": verdict}, failures


def load_of(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a level offered the server: its concurrency, or (a request-rate level) its rate and burstiness."""
    if row.get("kind") == "rate":
        return "rate", row.get("request_rate"), row.get("burstiness", 1.0)
    return "concurrency", row.get("concurrency")


def describe_load(row: dict[str, Any]) -> str:
    load = load_of(row)
    if load[0] == "rate":
        return f"{load[1]:g} req/s (burstiness {load[2]:g})" if isinstance(load[1], (int, float)) else "? req/s"
    return f"concurrency {load[1]}"


def compare_levels(rows: list[dict[str, Any]], baseline_rows: list[dict[str, Any]], pct: float,
                   alpha: float = ALPHA) -> tuple[list[dict[str, Any]], list[str]]:
    """compare_level at every level of this run: (records, failure reasons)."""
    base = {r["level"]: r for r in baseline_rows}
    records, failures = [], []
    for row in rows:
        rec, failed = compare_level(row, base.get(row["level"]), pct, alpha)
        records.append(rec)
        failures += failed
    return records, failures


def _interval(s: dict[str, Any]) -> str:
    bound = lambda v: "?" if v is None else f"{v:+.1f}%"  # noqa: E731
    return f"{s['estimate_pct']:+.1f}% [{bound(s.get('lower_pct'))}, {bound(s.get('upper_pct'))}]"


def _against(version: str | None, run_id: str | None) -> str:
    return f"production v{version}" + (f" (run {run_id[:12]})" if run_id else "") if version else "production"


def comparison_lines(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> list[str]:
    """Every level's line for the report (the load stage's `baseline` details): the comparison made, or why
    none was, naming what it would have been against."""
    version, run_id = baseline.get("version"), baseline.get("run_id")
    records = {rec["level"]: rec for rec in baseline.get("comparisons", [])}
    out = []
    for row in rows:
        rec = records.pop(row["level"], None)
        if rec is None:
            rec = {"level": row["level"], "compared": False,
                   "reason": baseline.get("reason") or "no comparison recorded for this level"}
        out.append(comparison_line(rec, version, run_id))
    return out + [comparison_line(rec, version, run_id) for rec in records.values()]


def comparison_line(rec: dict[str, Any], version: str | None = None, run_id: str | None = None) -> str:
    """One level's comparison with production, for notes and reports."""
    against = _against(version, run_id)
    head = f"{rec['level']} vs {against}"
    pct = rec.get("threshold_pct")
    if not rec.get("compared"):
        return f"{rec['level']}: not compared with {against} ({rec.get('reason', '?')})"
    if rec.get("method") == "p95":
        shown = lambda v: "-" if v is None else f"{v:+.1f}%"  # noqa: E731
        return (f"{head}: one measurement each side, {rec.get('fallback_reason')}: p95 e2e "
                f"{shown(rec.get('p95_e2el_change_pct'))}, output throughput "
                f"{shown(rec.get('output_throughput_change_pct'))} (regression_pct {pct:g}): {_words(rec)}")
    e2el, tput, ttft = rec["e2el"], rec["output_tok_s"], rec["ttft"]
    return (f"{head}: e2e latency {_interval(e2el)} (regresses above +{pct:g}%), per-request output tok/s "
            f"{_interval(tput)} (below -{pct:g}%), TTFT {_interval(ttft)} (not gated); "
            f"{100 * rec.get('confidence', 1 - ALPHA):g}% one-sided bounds, {e2el['n_candidate']} vs "
            f"{e2el['n_baseline']} requests: {_words(rec)}")


def _words(rec: dict[str, Any]) -> str:
    """A comparison's decision as notes show it; a record written before the Decision words shows its own."""
    verdict = rec.get("verdict")
    return WORDS[Decision(verdict)] if verdict in set(Decision) else str(verdict)


def cost_per_1m_output_tokens(output_throughput: float | None, price_per_hour: float | None) -> float | None:
    if price_per_hour is None or not output_throughput or output_throughput <= 0:
        return None
    return price_per_hour / (output_throughput * 3600.0) * 1e6


def costing_throughput(rows: list[dict[str, Any]], slo: LoadSlo) -> float | None:
    """Best output throughput among levels within every SLO; the best overall when none is."""
    ok = [r["output_throughput"] for r in rows if "output_throughput" in r and not check_level(r, slo)]
    every = [r["output_throughput"] for r in rows if "output_throughput" in r]
    return max(ok or every) if (ok or every) else None
