"""The model server's Prometheus `/metrics`, scraped while a load level runs.

`parse` reads the text exposition format into {name: value}, summing a metric's label sets (one per engine).
`Scraper` is a thread polling every second; its `summary()` gives max/mean of the queue and KV-cache gauges
and the preemption counter's increase. Names are those vLLM 0.32 exposes (tests/fixtures/vllm_metrics.txt
is a real capture); older names are accepted as fallbacks.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

WAITING = ("vllm:num_requests_waiting",)
RUNNING = ("vllm:num_requests_running",)
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "vllm:cpu_cache_usage_perc")  # 0..1
PREEMPTIONS = ("vllm:num_preemptions_total", "vllm:num_preemptions")


def parse(text: str) -> dict[str, float]:
    """Prometheus text -> {metric name: value summed over its label sets}; comments and junk are ignored."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, _, rest = line.partition("{")
            rest = rest.rsplit("}", 1)[-1]
        else:
            name, _, rest = line.partition(" ")
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        out[name.strip()] = out.get(name.strip(), 0.0) + value
    return out


def pick(values: dict[str, float], names: tuple[str, ...]) -> float | None:
    return next((values[n] for n in names if n in values), None)


class Scraper:
    """`with Scraper(fetch) as s: ...` polls `fetch()` (the /metrics text) every `interval_s` seconds."""

    def __init__(self, fetch: Callable[[], str], interval_s: float = 1.0):
        self.fetch = fetch
        self.interval_s = interval_s
        self.samples: list[dict[str, float]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-scraper", daemon=True)

    def _scrape(self) -> None:
        import httpx

        try:
            self.samples.append(parse(self.fetch()))
        except (OSError, ValueError, httpx.HTTPError):  # a missed scrape does not fail the load test; it is counted
            self.errors += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self._scrape()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - t0)))

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._scrape()  # the final counter values

    def summary(self) -> dict[str, float]:
        return summarize(self.samples, self.errors)


def summarize(samples: list[dict[str, float]], errors: int = 0) -> dict[str, float]:
    out: dict[str, float] = {"scrapes": float(len(samples)), "scrape_errors": float(errors)}
    for key, names in (("waiting", WAITING), ("running", RUNNING), ("kv_cache_usage", KV_USAGE)):
        series = [v for v in (pick(s, names) for s in samples) if v is not None]
        if series:
            out[f"max_{key}"] = max(series)
            out[f"mean_{key}"] = sum(series) / len(series)
    counters = [v for v in (pick(s, PREEMPTIONS) for s in samples) if v is not None]
    if counters:
        out["preemptions"] = max(0.0, counters[-1] - counters[0])
    return out
