"""One window of a served name's metrics, read from Prometheus at the window's end (pipeline/watch/promql.py's
queries): the values judge.py judges, the histograms' bucket counts for the per-request comparison, and every query
asked (recorded as evidence)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from pipeline.watch import promql
from pipeline.watch.prom import Prometheus


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def _buckets(prom: Prometheus, query: str, end: float) -> tuple[list[float], list[float]] | None:
    """(finite upper bounds, cumulative counts with +Inf last), or None without series."""
    rows = []
    for s in prom.query(query, end):
        le = s.labels.get("le")
        if le is not None:
            rows.append((math.inf if le == "+Inf" else float(le), s.value))
    if not rows:
        return None
    rows.sort()
    return [le for le, _ in rows if le != math.inf], [v for _, v in rows]


def observe(prom: Prometheus, served_name: str, end: float, window_s: int) -> dict[str, Any]:
    """The window (end - window_s, end] of `served_name`."""
    w = window_s
    queries = {
        "requests": promql.arrived(served_name, w),
        "finished": promql.finished(served_name, w),
        "request_rate": promql.request_rate(served_name, w),
        "unfinished_share": promql.unfinished_share(served_name, w),
        **{key: f"{promql.p95(hist, served_name, w)} * 1000" for key, hist in promql.HISTOGRAMS.items()},
        "failed_share": promql.share(served_name, w, promql.FAILED_REASONS),
        "length_share": promql.share(served_name, w, "length"),
        "output_tokens_per_request": promql.output_tokens_per_request(served_name, w),
        "queue_max": promql.queue_max(served_name, w),
        "preemptions": promql.preemptions(served_name, w),
    }
    out: dict[str, Any] = {"served_name": served_name, "start": iso(end - w), "end": iso(end), "queries": queries}
    for key, query in queries.items():
        value = prom.value(query, end)
        out[key] = None if value is None or not math.isfinite(value) else round(value, 6)  # 0/0: NaN
    out["buckets"] = {}
    for key in ("p95_e2el_ms", "p95_ttft_ms"):
        query = promql.buckets(promql.HISTOGRAMS[key], served_name, w)
        found = _buckets(prom, query, end)
        if found is not None:
            bounds, cumulative = found
            out["buckets"][key] = ([1000.0 * b for b in bounds], cumulative)
            queries[f"{key}_buckets"] = query
    return out
