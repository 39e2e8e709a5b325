"""`modelgate watch`: what production serves since its promotion, judged window by window, recorded, and (with
promotion.auto_rollback) rolled back on evidence.

    production      `resolve production` (every link of the chain verified): its served name; the verified audit
                    event that made it production (its time, and the version it replaced: the previous one)
    windows         the latest ones (consecutive_windows with auto_rollback, else one) of watch.window_s, each wholly
                    after the promotion; the previous version's window is the one just before the promotion
    judged          judge.py, signal by signal
    recorded        on the promotion's audit run in MLflow: the whole judgement as the artifact
                    `watch/<time>.json` and its values as `watch.*` metrics. Neither is a `modelgate.*` tag, so the
                    run's seal (releasing/seal.py: it covers the run id and those tags) still verifies
    rolled back     every judged window degraded, consecutive_windows of them, and auto_rollback on: the rollback of
                    `modelgate rollback` (releasing/promotion.py: policy, readiness of the target, sealed audit run,
                    git tag, GitHub deployment), as `modelgate-watch`, the evidence as its reason

No data (no traffic, fewer than watch.min_requests requests, less than a window since the promotion) is its own
status and never rolls back; Prometheus not answering is an infrastructure error (exit 3).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.release import Release
from pipeline.config.watch import WATCH_ACTOR
from pipeline.core import tags as tagnames
from pipeline.watch import judge
from pipeline.watch.observe import observe
from pipeline.watch.prom import Prometheus


@dataclass
class Production:
    model: str
    version: str
    served_name: str
    promoted_at: float  # unix seconds
    audit_run_id: str | None
    previous_version: str | None = None
    previous_served_name: str | None = None


@dataclass
class WatchResult:
    status: str
    production: Production
    judgements: list[judge.Judgement]
    notes: list[str] = field(default_factory=list)
    rolled_back_to: str | None = None

    def as_dict(self) -> dict[str, Any]:
        p = self.production
        return {"status": self.status, "model": p.model, "version": p.version, "served_name": p.served_name,
                "promoted_at": dt.datetime.fromtimestamp(p.promoted_at, dt.UTC).isoformat(timespec="seconds"),
                "previous_version": p.previous_version, "previous_served_name": p.previous_served_name,
                "notes": self.notes, "rolled_back_to": self.rolled_back_to,
                "windows": [j.as_dict() for j in self.judgements]}


def windows_to_judge(release: Release) -> int:
    ar = release.promotion.auto_rollback
    return ar.consecutive_windows if ar.enabled else 1


def judge_windows(release: Release, prom: Prometheus, prod: Production, now: float, count: int,
                  progress: Callable[[str], None] = print) -> WatchResult:
    """The latest `count` windows after the promotion (newest first), each against the previous version's window
    before the promotion. Prometheus only: no MLflow."""
    w = release.watch.window_s
    ends = [now - k * w for k in range(count) if now - (k + 1) * w >= prod.promoted_at]
    if not ends:
        return WatchResult(judge.NO_DATA, prod, [], notes=[
            f"less than one window ({w}s) since the promotion at "
            f"{dt.datetime.fromtimestamp(prod.promoted_at, dt.UTC).isoformat(timespec='seconds')}: nothing to judge"])
    before = observe(prom, prod.previous_served_name, prod.promoted_at, w) if prod.previous_served_name else None
    judgements = []
    for end in ends:
        j = judge.judge(observe(prom, prod.served_name, end, w), before, release)
        judgements.append(j)
        for line in judge.lines(j):
            progress(line)
    return WatchResult(judgements[0].status, prod, judgements)


def should_roll_back(release: Release, result: WatchResult) -> bool:
    ar = release.promotion.auto_rollback
    return ar.enabled and len(result.judgements) == ar.consecutive_windows and \
        all(j.status == judge.DEGRADED for j in result.judgements)


def evidence(result: WatchResult) -> str:
    """The rollback's reason: what was degraded, with its values, thresholds and queries."""
    parts = []
    for j in result.judgements:
        for s in j.degraded():
            parts.append(f"{j.window['end']} {s.name}={s.value} ({'; '.join(s.evidence)}) query: {s.query}")
    head = (f"modelgate watch: {len(result.judgements)} consecutive degraded window(s) of "
            f"{result.production.served_name}")
    return f"{head}: " + " | ".join(parts)


def _parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def production(release: Release, uri: str) -> Production:
    """What production serves, verified (`resolve production`), and the audit event that made it production."""
    from pipeline.integrations.registry import PRODUCTION, Registry
    from pipeline.releasing import chain
    from pipeline.releasing.history import resolve
    from pipeline.releasing.policy import version_record

    doc = resolve(release, uri, PRODUCTION)
    reg = Registry(uri)
    ev = chain.check_production_link(release, chain.audit_log(release, uri), reg.by_alias(release.model_name,
                                                                                           PRODUCTION))
    at = (ev.tags.get(tagnames.FINISHED_AT) or ev.at) if ev else ""
    prod = Production(release.model_name, doc["version"], doc["served_name"], _parse_time(at) if at else 0.0,
                      ev.run_id if ev else None)
    if ev is not None and ev.from_version:
        mv = reg.version(release.model_name, ev.from_version)
        if mv is not None:
            prod.previous_version = mv.version
            prod.previous_served_name = f"{release.served_name_prefix}@{version_record(reg, mv).pin.revision[:12]}"
    return prod


def record(release: Release, uri: str, result: WatchResult) -> str | None:
    """The judgement on the promotion's audit run (artifact + metrics; no `modelgate.*` tag, so the seal holds)."""
    from pipeline.integrations.runstore import RunStore

    run_id = result.production.audit_run_id
    if run_id is None:
        return None
    store = RunStore(uri, release.audit_experiment, release.root / "mlflow" / "artifacts")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = f"watch/{stamp}.json"
    store.log_text("recording what watch saw", run_id, json.dumps(result.as_dict(), indent=2, default=str), path)
    metrics = {"watch.status_degraded": float(result.status == judge.DEGRADED),
               "watch.status_no_data": float(result.status == judge.NO_DATA)}
    if result.judgements:
        for s in result.judgements[0].signals:
            if s.value is not None:
                metrics[f"watch.{s.name}"] = float(s.value)
    store.log_metrics("recording what watch saw", run_id, metrics)
    return path


def watch(release: Release, uri: str, prometheus_url: str, *, now: float | None = None,
          progress: Callable[[str], None] = print, home: Path | None = None) -> WatchResult:
    prod = production(release, uri)
    progress(f"production: {prod.model} v{prod.version} served as {prod.served_name} since "
             f"{dt.datetime.fromtimestamp(prod.promoted_at, dt.UTC).isoformat(timespec='seconds')}"
             + (f", replacing v{prod.previous_version} ({prod.previous_served_name})" if prod.previous_version
                else ""))
    result = judge_windows(release, Prometheus(prometheus_url), prod, time.time() if now is None else now,
                           windows_to_judge(release), progress)
    for note in result.notes:
        progress(note)
    path = record(release, uri, result)
    if path:
        progress(f"recorded on the promotion's audit run {prod.audit_run_id}: {path}")
    if should_roll_back(release, result):
        from pipeline.releasing.promotion import rollback

        progress(f"auto_rollback: {len(result.judgements)} consecutive degraded windows: rolling back as "
                 f"{WATCH_ACTOR}")
        outcome = rollback(release, uri, None, WATCH_ACTOR, evidence(result), progress=progress, home=home)
        result.rolled_back_to = outcome.version
    return result
