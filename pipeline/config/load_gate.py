"""`gates.load:` in release.yaml: the load test on the staging server (gate/stages/load.py runs it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from pipeline.config.fields import AS_WRITTEN, SECTION, UNIQUE, Absent, Count, NonNegative, Positive, doc

LoadPromptSource = Literal["random", "suites"]

RATE_LEVEL_SECONDS = 10.0
MIN_RATE_REQUESTS = 16


@dataclass(frozen=True)
class LoadPrompts:
    """`gates.load.prompts`: what each benchmark request sends."""

    __pydantic_config__ = SECTION

    source: Annotated[LoadPromptSource, doc(
        "random: token prompts of input_len tokens (vLLM's random dataset, token-exact lengths, fixed seed); "
        "suites: the prompt suites' chat messages (gates.format.prompts_dir) through /v1/chat/completions; "
        "output_len tokens each either way")] = "random"
    input_len: Annotated[int, doc("prompt tokens (random)", ge=1, le=131072)] = 128
    output_len: Annotated[int, doc("output tokens per request", ge=1, le=131072)] = 64
    requests_per_concurrency: Annotated[int, doc("requests per level = this x the level's concurrency",
                                                 ge=1)] = 8
    requests_per_level: Annotated[Count | Absent, doc(
        "a fixed request count per level (overrides requests_per_concurrency; a request-rate level sends "
        f"~{RATE_LEVEL_SECONDS:g} s of arrivals, at least {MIN_RATE_REQUESTS}, without it)")] = None
    seed: Annotated[int, doc("seed of the prompts and of the arrivals", ge=0)] = 0

    def requests_for(self, concurrency: int) -> int:
        return self.requests_per_level or self.requests_per_concurrency * concurrency

    def requests_for_rate(self, rate: float) -> int:
        """A request-rate level sends requests_per_level requests, else ~RATE_LEVEL_SECONDS of arrivals (at least
        MIN_RATE_REQUESTS)."""
        return self.requests_per_level or max(MIN_RATE_REQUESTS, math.ceil(rate * RATE_LEVEL_SECONDS))


@dataclass(frozen=True)
class LoadSlo:
    """`gates.load.slo`: checked at every level; a limit left out is not checked."""

    __pydantic_config__ = SECTION

    p95_e2el_ms: Annotated[Positive | Absent, doc("p95 end-to-end latency, ms")] = None
    p95_ttft_ms: Annotated[Positive | Absent, doc("p95 time to first token, ms")] = None
    p95_tpot_ms: Annotated[Positive | Absent, doc("p95 time per output token, ms")] = None
    min_output_throughput: Annotated[NonNegative | Absent, doc("output tokens/s (concurrency levels)")] = None
    max_failed: Annotated[int, doc("failed requests allowed per level", ge=0)] = 0


@dataclass(frozen=True)
class LoadKnee:
    """`gates.load.knee`: a bounded search for the highest request rate (Poisson arrivals) that meets every
    latency SLO. From `start_rate` the rate grows by `growth` until a rate fails (or `max_rate`), or shrinks by it
    while the start fails; then the interval (last passing, first failing) is bisected (geometric mean) until
    first failing / last passing <= 1 + `precision`. At most `max_steps` benchmark runs and `max_seconds`.
    `min_rate`: the gate fails when the highest passing rate is below it (None: reported only)."""

    __pydantic_config__ = SECTION

    start_rate: Annotated[Positive, doc("requests/s of the first step")] = 1.0
    max_rate: Annotated[Positive, doc("never search above this")] = 64.0
    growth: Annotated[float, Field(gt=1), AS_WRITTEN, doc("factor between steps until a rate fails")] = 2.0
    precision: Annotated[Positive, doc("stop bisecting when first failing / last passing <= 1 + precision")] = 0.25
    max_steps: Annotated[int, doc("benchmark runs at most", ge=1, le=50)] = 8
    max_seconds: Annotated[Positive, doc("no step starts that would end after this")] = 600.0
    min_rate: Annotated[Positive | Absent, doc(
        "the gate fails when the highest rate within SLO is below this (absent: reported only)")] = None


@dataclass(frozen=True)
class LoadGate:
    """`gates.load`: the load test on the staging server at multiples of the expected peak concurrency, at
    request rates, and a knee search. No section: no load test; `load: {}` runs it with the defaults."""

    __pydantic_config__ = SECTION

    enabled: Annotated[bool, doc("run the load test")] = True
    peak_concurrency: Annotated[int, doc("expected peak concurrent requests in production", ge=1, le=4096)] = 1
    levels: Annotated[tuple[Positive, ...], UNIQUE, doc(
        "multipliers of peak_concurrency (closed loop: that many requests in flight); [] for request-rate levels "
        "only")] = (1, 3, 5)
    prompts: LoadPrompts = LoadPrompts()
    slo: LoadSlo = LoadSlo()
    regression_pct: Annotated[NonNegative, doc(
        "max % worse than production at the same level: per-request e2e latency / output tok/s, with confidence "
        "1 - gates.alpha (p95 e2e latency / output throughput when production recorded no per-request "
        "latencies)")] = 20.0
    price_per_hour: Annotated[NonNegative | Absent, doc("USD per accelerator-hour (or machine-hour on CPU)")] = None
    request_rate: Annotated[Positive | None, doc(
        "arrival cap of the concurrency levels, requests/s; null or absent: as fast as the concurrency "
        "allows")] = None
    rates: Annotated[tuple[Annotated[float, Field(gt=0)], ...], UNIQUE, doc(
        "request-rate levels in requests/s: arrivals of a Poisson process (gamma with burstiness), open loop "
        "(vllm bench --request-rate)")] = ()
    burstiness: Annotated[Positive, doc(
        "arrival burstiness of the rate levels and the knee search (vllm bench --burstiness): 1 Poisson, below 1 "
        "burstier, above 1 more uniform")] = 1.0
    knee: Annotated[LoadKnee | Absent, doc(
        "a bounded search for the highest request rate that meets every latency SLO, reported with its interval "
        "(last passing, first failing)")] = None

    def concurrency(self, level: float) -> int:
        return max(1, round(self.peak_concurrency * level))
