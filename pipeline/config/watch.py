"""`watch:` and `promotion.auto_rollback:` in release.yaml: how `modelgate watch` reads production's serving metrics
from Prometheus and judges them after a promotion (pipeline/watch/), and when it rolls back on its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from pipeline.config.fields import SECTION, Absent, Fraction, HttpUrl, Positive, doc

WATCH_ACTOR = "modelgate-watch"  # the actor of a rollback that watch makes (promotion.auto_rollback)


@dataclass(frozen=True)
class Watch:
    """`watch`: production's serving metrics (vLLM's own, scraped by Prometheus), judged after a promotion against
    gates.load.slo and against the previous version's window before the promotion. Also the source of the
    alerting rules `modelgate alerts` generates."""

    __pydantic_config__ = SECTION

    prometheus_url: Annotated[HttpUrl | Absent, doc(
        "Prometheus' HTTP API (its /api/v1/query is asked), unless --prometheus-url or MODELGATE_PROMETHEUS_URL "
        "says otherwise")] = None
    window_s: Annotated[int, doc("length of one judged window, seconds (also the alerting rules' rate window)",
                                 ge=2, le=86400)] = 600
    min_requests: Annotated[int, doc("a window with fewer requests arrived (finished, or still running or waiting "
                                     "at its end) is `no data`, never degraded",
                                     ge=1)] = 20
    max_failed_share: Annotated[Fraction, doc(
        "SLO: the share of requests that finished aborted or in error (vLLM's finished_reason abort, error)")] = 0.01
    max_unfinished_share: Annotated[Fraction, doc(
        "SLO: the backlog a window added (requests running or waiting at its end minus at its start) as a share of "
        "the requests that arrived in it, degraded when it is above this with confidence 1 - gates.alpha: a "
        "version that cannot keep up with the traffic piles requests up")] = 0.25
    max_share_increase: Annotated[Fraction, doc(
        "vs the previous version: a share (failed, finished by length, unfinished) is degraded when its increase "
        "is above this with confidence 1 - gates.alpha")] = 0.05
    max_queue: Annotated[Positive | Absent, doc(
        "SLO: most requests waiting in vLLM's queue during a window (absent: reported only)")] = None
    rate_tolerance: Annotated[Positive, doc(
        "the previous version's window is compared only when the arrival rates differ by at most this factor "
        "(max/min <= 1 + rate_tolerance)")] = 0.5
    alert_for_s: Annotated[int, doc("the alerting rules' `for:` (seconds the condition must hold)", ge=0)] = 300


@dataclass(frozen=True)
class AutoRollback:
    """`promotion.auto_rollback`: `modelgate watch` rolls back (the same rollback as the command, as the actor
    `modelgate-watch`, which must then be one of promotion.release_managers) when the judgement is degraded for
    `consecutive_windows` windows in a row. No data never rolls back. Off by default."""

    __pydantic_config__ = SECTION

    enabled: Annotated[bool, doc("roll back on evidence")] = False
    consecutive_windows: Annotated[int, Field(ge=1, le=100), doc(
        "degraded windows in a row (the latest ones, all after the promotion) before it rolls back")] = 3
