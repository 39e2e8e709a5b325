"""`modelgate alerts`: Prometheus alerting rules from release.yaml's SLOs (gates.load.slo's p95 latencies,
watch.max_failed_share, watch.max_unfinished_share, watch.max_queue), over vLLM's metrics of the served name
production serves; and the same queries as an Argo Rollouts AnalysisTemplate (`--format argo`).

Each SLO is one `Limit`: a query whose value is compared with the limit. An alert fires when the value is above
it for watch.alert_for_s; an analysis run's measurement succeeds when it is at or below it, or when there is no
value (no traffic: NaN), which never counts against a rollout, as `modelgate watch` never judges no data degraded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.config.release import Release
from pipeline.watch import promql


@dataclass(frozen=True)
class Limit:
    key: str  # where the limit is in release.yaml
    alert: str
    query: str  # the value, in the unit of the limit
    limit: float
    what: str


def limits(release: Release, served_name: str) -> list[Limit]:
    """The SLOs release.yaml sets, as queries over `served_name`'s metrics; [] when it sets none."""
    w = release.watch.window_s
    slo = release.load_gate.slo
    out = []
    for key, hist in promql.HISTOGRAMS.items():
        value = getattr(slo, key)
        if value is not None:
            name = {"p95_e2el_ms": "E2eLatency", "p95_ttft_ms": "TimeToFirstToken",
                    "p95_tpot_ms": "TimePerOutputToken"}[key]
            out.append(Limit(f"gates.load.slo.{key}", f"ModelgateP95{name}AboveSlo",
                             f"{promql.p95(hist, served_name, w)} * 1000", float(value),
                             f"p95 {name} (ms)"))
    out.append(Limit("watch.max_failed_share", "ModelgateFailedShareAboveSlo",
                     promql.share(served_name, w, promql.FAILED_REASONS), float(release.watch.max_failed_share),
                     "share of requests finished aborted or in error"))
    # the point estimate (watch judges its lower confidence bound): a version that cannot keep up fires it
    out.append(Limit("watch.max_unfinished_share", "ModelgateUnfinishedShareAboveSlo",
                     promql.unfinished_share(served_name, w), float(release.watch.max_unfinished_share),
                     "share of the arrived requests still unfinished (the backlog the window added)"))
    if release.watch.max_queue is not None:
        out.append(Limit("watch.max_queue", "ModelgateQueueAboveSlo", promql.queue_max(served_name, w),
                         float(release.watch.max_queue), "most requests waiting"))
    return out


def rules(release: Release, served_name: str) -> dict[str, Any]:
    """The rule file (`promtool check rules` accepts it): one group, one alert per limit."""
    return {"groups": [{"name": f"modelgate-{release.model_name}", "rules": [
        {"alert": lim.alert, "expr": f"({lim.query}) > {lim.limit:g}", "for": f"{release.watch.alert_for_s}s",
         "labels": {"severity": "page", "model": release.model_name, "served_name": served_name},
         "annotations": {"summary": f"{release.model_name} ({served_name}): {lim.what} above {lim.limit:g}",
                         "description": f"{lim.what} is {{{{ $value }}}} over the last {release.watch.window_s}s; "
                                        f"the limit {lim.limit:g} is {lim.key} in release.yaml"}}
        for lim in limits(release, served_name)]}]}


def _k8s_name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63] or "model"


def analysis_template(release: Release, served_name: str, prometheus_url: str | None) -> dict[str, Any]:
    """An Argo Rollouts AnalysisTemplate with the same queries: each measurement must be within its limit."""
    address = prometheus_url or "http://prometheus.monitoring:9090"
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": f"modelgate-{_k8s_name(release.model_name)}"},
            "spec": {"args": [{"name": "prometheus-address", "value": address}],
                     "metrics": [{"name": _k8s_name(lim.alert), "interval": f"{max(60, release.watch.window_s // 10)}s",
                                  "failureLimit": 1,
                                  "successCondition": f"isNaN(result[0]) || result[0] <= {lim.limit:g}",
                                  "provider": {"prometheus": {"address": "{{args.prometheus-address}}",
                                                              "query": lim.query}}}
                                 for lim in limits(release, served_name)]}}
