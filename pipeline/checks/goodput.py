"""Goodput and the knee: how much load the candidate serves within its SLOs. Pure arithmetic, no I/O.

Goodput (vLLM's `vllm bench serve --goodput`, after DistServe): the requests per second that completed and met
every per-request latency limit. The limits are the load SLOs' values (`gates.load.slo`): a request is good
when its own TTFT <= `p95_ttft_ms`, its TPOT <= `p95_tpot_ms` and its e2e latency <= `p95_e2el_ms` (each only
when configured; none configured: every completed request is good). As in vLLM's `calculate_metrics`, a
request's TPOT is (e2e latency - TTFT) / (output tokens - 1), and 0 for one output token; failed requests are
never good; goodput = good requests / the benchmark's duration. `good_output_throughput` is the output tokens
of the good requests per second: the throughput that can be sold within the SLO, from which the cost per 1M
output tokens is computed.

A request-rate level (open loop: Poisson arrivals at `rate` requests/s, `burstiness` as vLLM's) meets the SLOs
when no more than `max_failed` requests failed and the p95 latencies are within their limits; the
`min_output_throughput` SLO is a capacity claim checked at the concurrency levels only (at a fixed arrival rate
the throughput is what is offered).

The knee (`search_knee`): the highest rate that meets the SLOs, found by a bounded search: from `start_rate`
grow by `growth` until a rate fails or `max_rate` is reached (shrink by it while the start rate fails), then
bisect (geometric mean) between the last passing and the first failing rate until their ratio is at most
1 + `precision`; never more than `max_steps` runs, and no run starts that is expected to end after
`max_seconds`. The result is the interval [last passing, first failing) and why the search stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.checks import slo as rules
from pipeline.config.release import LoadKnee, LoadSlo

# vLLM's --goodput names -> the SLO field whose value is the per-request limit (ms)
GOODPUT_SLOS = {"ttft": "p95_ttft_ms", "tpot": "p95_tpot_ms", "e2el": "p95_e2el_ms"}


def limits(slo: LoadSlo) -> dict[str, float]:
    """The per-request limits in vLLM's `--goodput` form ({"ttft": ms, "tpot": ms, "e2el": ms}), configured only."""
    return {name: float(getattr(slo, key)) for name, key in GOODPUT_SLOS.items() if getattr(slo, key) is not None}


def goodput_args(slo: LoadSlo) -> list[str]:
    """`--goodput ttft:500 e2el:5000` for vllm bench serve ([] when no latency SLO is configured)."""
    pairs = [f"{name}:{value:g}" for name, value in limits(slo).items()]
    return ["--goodput", *pairs] if pairs else []


def request_metrics(result: dict[str, Any]) -> list[dict[str, float] | None]:
    """Per request of the benchmark's detailed result (`--save-detailed`): None for a failed request, else its
    ttft, tpot and e2el in ms and its output tokens (vLLM's definitions)."""
    lat, ttft, out = result.get("latencies") or [], result.get("ttfts") or [], result.get("output_lens") or []
    errors = result.get("errors") or [""] * len(lat)
    rows: list[dict[str, float] | None] = []
    for i in range(min(len(lat), len(ttft), len(out), len(errors))):
        if errors[i] or not isinstance(lat[i], (int, float)) or lat[i] <= 0:
            rows.append(None)
            continue
        tokens = int(out[i] or 0)
        tpot = (lat[i] - ttft[i]) / (tokens - 1) if tokens > 1 else 0.0
        rows.append({"ttft": 1000.0 * ttft[i], "tpot": 1000.0 * tpot, "e2el": 1000.0 * lat[i],
                     "output_tokens": float(tokens)})
    return rows


def goodput(result: dict[str, Any], request_limits: dict[str, float]) -> dict[str, Any]:
    """good_requests, goodput (req/s), good_output_throughput (tok/s) and good_fraction (of the requests sent),
    with `request_limits` as `limits()` gives them. Without per-request details: {} (nothing to count)."""
    per_request = request_metrics(result)
    duration = result.get("duration")
    if not per_request or not isinstance(duration, (int, float)) or duration <= 0:
        return {}
    good = [r for r in per_request
            if r is not None and all(r[name] <= limit for name, limit in request_limits.items())]
    return {"good_requests": len(good), "goodput": len(good) / duration,
            "good_output_throughput": sum(r["output_tokens"] for r in good) / duration,
            "good_fraction": len(good) / len(per_request), "goodput_limits_ms": dict(request_limits)}


def rate_label(rate: float) -> str:
    return f"{rate:g}rps"


def rate_summary(rate: float, burstiness: float, result: dict[str, Any], slo: LoadSlo,
                 server: dict[str, float] | None = None, *, keep_samples: bool = True) -> dict[str, Any]:
    """One request-rate level's row: the benchmark's counts, rates and percentiles (slo.level_summary), the
    goodput, the offered rate and what vLLM itself computed as goodput (`vllm_request_goodput`). With
    `keep_samples` (a rate level, not a knee step) its per-request records, for the comparison with production."""
    row = rules.level_summary(rate, 0, result, server)
    row.pop("multiplier", None)
    row.pop("concurrency", None)
    if not keep_samples:
        row.pop("samples", None)
    row.update({"level": rate_label(rate), "kind": "rate", "request_rate": rate, "burstiness": burstiness})
    row.update(goodput(result, limits(slo)))
    if isinstance(result.get("request_goodput"), (int, float)):
        row["vllm_request_goodput"] = float(result["request_goodput"])
    return row


def check_rate_level(row: dict[str, Any], slo: LoadSlo) -> list[str]:
    """The SLOs a request-rate level missed: failed requests and the latency limits (not min_output_throughput)."""
    latency_only = LoadSlo(p95_e2el_ms=slo.p95_e2el_ms, p95_ttft_ms=slo.p95_ttft_ms, p95_tpot_ms=slo.p95_tpot_ms,
                           max_failed=slo.max_failed)
    return rules.check_level(row, latency_only)


def check_row(row: dict[str, Any], slo: LoadSlo) -> list[str]:
    """A row of either kind against the SLOs that apply to it."""
    return check_rate_level(row, slo) if row.get("kind") == "rate" else rules.check_level(row, slo)


def costing_throughput(rows: Sequence[dict[str, Any]], slo: LoadSlo) -> float | None:
    """The goodput-limited output throughput: the best `good_output_throughput` (output tokens/s of requests that
    met every limit) among rows within every SLO, else among all rows; rows without per-request details count
    with their output throughput (older records). None: no row; 0 is returned as None (nothing sellable)."""
    def tput(r: dict[str, Any]) -> float | None:
        v = r.get("good_output_throughput", r.get("output_throughput"))
        return float(v) if isinstance(v, (int, float)) else None

    ok = [t for r in rows if not check_row(r, slo) and (t := tput(r)) is not None]
    every = [t for r in rows if (t := tput(r)) is not None]
    best = max(ok or every) if (ok or every) else None
    return best if best else None


def search_knee(measure: Callable[[float], dict[str, Any]], passes: Callable[[dict[str, Any]], bool],
                cfg: LoadKnee, *, requests_for: Callable[[float], int],
                clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """The bounded knee search (module docstring). `measure(rate)` runs one step and returns its row,
    `passes(row)` says whether it met the SLOs, `requests_for(rate)` is a step's request count (for the time
    estimate: arrivals take requests / rate seconds, plus the overhead the previous step had).

    Returns: rate (highest passing, None if none), first_failing (None if none), bracketed, stopped (why),
    steps (rows with `within_slo`), elapsed_s and the bounds it ran under."""
    started = clock()
    steps: list[dict[str, Any]] = []
    lo: float | None = None  # highest passing
    hi: float | None = None  # lowest failing
    rate = min(cfg.start_rate, cfg.max_rate)
    overhead = 0.0
    stopped = ""
    while True:
        if len(steps) >= cfg.max_steps:
            stopped = f"max_steps {cfg.max_steps} reached"
            break
        elapsed = clock() - started
        expected = requests_for(rate) / rate + overhead
        if elapsed + expected > cfg.max_seconds:
            stopped = (f"max_seconds {cfg.max_seconds:g}: the next step ({rate:g} req/s, ~{expected:.0f} s) would "
                       f"end after it ({elapsed:.0f} s used)")
            break
        t0 = clock()
        row = dict(measure(rate))
        overhead = max(0.0, clock() - t0 - requests_for(rate) / rate)
        ok = bool(passes(row))
        row["within_slo"] = ok
        steps.append(row)
        if ok:
            lo = rate if lo is None else max(lo, rate)
        else:
            hi = rate if hi is None else min(hi, rate)
        if hi is None:  # growing: nothing failed yet
            if rate >= cfg.max_rate:
                stopped = f"max_rate {cfg.max_rate:g} req/s met the SLOs"
                break
            rate = min(rate * cfg.growth, cfg.max_rate)
        elif lo is None:  # shrinking: the start rate already failed
            rate = rate / cfg.growth
        else:
            if hi / lo <= 1 + cfg.precision:
                stopped = f"precision {cfg.precision:g} reached"
                break
            rate = float(f"{math.sqrt(lo * hi):.3g}")  # readable level names; the ratio still shrinks
    return {"rate": lo, "first_failing": hi, "bracketed": lo is not None and hi is not None, "stopped": stopped,
            "steps": steps, "elapsed_s": round(clock() - started, 3), "start_rate": cfg.start_rate,
            "max_rate": cfg.max_rate, "growth": cfg.growth, "precision": cfg.precision,
            "max_steps": cfg.max_steps, "max_seconds": cfg.max_seconds, "min_rate": cfg.min_rate}


def knee_failures(knee: dict[str, Any]) -> list[str]:
    """The gate's reason when the highest rate within SLO is below `min_rate` (none when min_rate is unset)."""
    floor = knee.get("min_rate")
    if floor is None:
        return []
    rate = knee.get("rate")
    if rate is not None and rate >= floor:
        return []
    return [f"load knee: {knee_line(knee)} < min_rate {floor:g} req/s"]


def knee_line(knee: dict[str, Any]) -> str:
    """The knee in one line: "highest rate within SLO 2.83 req/s, first failing 4 req/s (interval [2.83, 4)); 5
    steps in 84 s, stopped: precision 0.25 reached"."""
    rate, hi = knee.get("rate"), knee.get("first_failing")
    if rate is None:
        lowest = min((s["request_rate"] for s in knee.get("steps", [])), default=None)
        head = "no rate within SLO" + (f" down to {lowest:g} req/s" if lowest is not None else "")
    elif hi is None:
        head = f"highest rate within SLO {rate:.3g} req/s, no failing rate found (interval [{rate:.3g}, ?))"
    else:
        head = (f"highest rate within SLO {rate:.3g} req/s, first failing {hi:.3g} req/s "
                f"(interval [{rate:.3g}, {hi:.3g}))")
    at = next((s for s in knee.get("steps", []) if s.get("request_rate") == rate), None)
    if at is not None and at.get("goodput") is not None:
        head += f", goodput there {at['goodput']:.2f} req/s"
    return (f"{head}; {len(knee.get('steps', []))} step(s) in {knee.get('elapsed_s', 0):.0f} s, stopped: "
            f"{knee.get('stopped', '?')}")


def _interval_text(lo: float | None, hi: float | None) -> str:
    shown = lambda v: "?" if v is None else f"{v:.3g}"  # noqa: E731
    return f"[{shown(lo)}, {shown(hi)})"


def knee_comparison(knee: dict[str, Any], base_knee: dict[str, Any] | None, request_limits: dict[str, float],
                    base_limits: dict[str, float] | None) -> dict[str, Any]:
    """This gate's knee interval next to production's: `relation` "lower" (this gate missed the SLOs at a rate
    production met), "higher" (it met them at a rate production missed) or "overlapping" (not separable by one
    bracket each side). Never gated: a knee is one search, with no confidence bound."""
    mine = [knee.get("rate"), knee.get("first_failing")]
    if base_knee is None:
        return {"compared": False, "interval": mine, "reason": "production's gate ran no knee search"}
    if base_limits is not None and {k: float(v) for k, v in base_limits.items()} != \
            {k: float(v) for k, v in request_limits.items()}:
        return {"compared": False, "interval": mine,
                "reason": f"production's knee was searched against other limits ({base_limits} ms, this gate "
                          f"{request_limits} ms)"}
    theirs = [base_knee.get("rate"), base_knee.get("first_failing")]
    if mine[1] is not None and (theirs[0] is not None and mine[1] <= theirs[0]):
        relation = "lower"
    elif mine[0] is not None and theirs[1] is not None and mine[0] >= theirs[1]:
        relation = "higher"
    else:
        relation = "overlapping"
    return {"compared": True, "gated": False, "interval": mine, "production_interval": theirs,
            "relation": relation}


def knee_comparison_line(cmp: dict[str, Any], version: str | None = None) -> str:
    against = f"production v{version}" if version else "production"
    if not cmp.get("compared"):
        return f"knee: not compared with {against} ({cmp.get('reason', '?')})"
    (lo, hi), (plo, phi) = cmp["interval"], cmp["production_interval"]
    if cmp["relation"] == "lower":  # knee_comparison says "lower" only with a first failing rate, "higher" with a knee
        why = f"this gate missed the SLOs at {hi:.3g} req/s, which {against} met"
    elif cmp["relation"] == "higher":
        why = f"this gate met the SLOs at {lo:.3g} req/s, which {against} missed"
    else:
        why = "the intervals overlap"
    return (f"knee vs {against}: {_interval_text(lo, hi)} vs {_interval_text(plo, phi)} req/s: {cmp['relation']} "
            f"({why}); shown, not gated: one search each side, no confidence bound")
