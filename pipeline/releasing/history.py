"""`modelgate history` and `modelgate resolve`: what was released, when, by whom, on which evidence.

Read from MLflow only: gate runs (the tracking experiment), model versions and aliases (the registry),
approvals, promotions and rollbacks (the audit experiment, which records every alias move).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipeline.config.release import Release
from pipeline.errors import BadInput
from pipeline.integrations.registry import CANDIDATE, PREVIOUS, PRODUCTION, Registry
from pipeline.integrations.tracking import display_uri, gate_runs
from pipeline.releasing import claim
from pipeline.releasing.audit import AuditLog, as_dict


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _key_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The numbers a release manager scans: format pass rate, each eval metric, p95 latency per load level."""
    keep = {}
    for k, v in sorted(metrics.items()):
        stage, _, rest = k.partition(".")
        if k == "format.pass_rate" or (stage == "evals" and rest.count(".") == 1) or \
                (stage == "load" and (rest.endswith(".p95_e2el_ms") or rest == "cost_per_1m_output_tokens")):
            keep[k] = round(v, 4)
    return keep


def timeline(release: Release, uri: str) -> dict[str, Any]:
    reg = Registry(uri)
    audit = AuditLog(uri, release.audit_experiment)
    versions = reg.versions(release.model_name) if reg.model_exists(release.model_name) else []
    version_of_run = {v.run_id: v.version for v in versions}
    entries: list[dict[str, Any]] = []
    for run in gate_runs(uri, release.tracking_experiment, release.model_name):
        tags = run.tags
        entries.append({"ms": run.start_ms, "at": _iso(run.start_ms), "event": "gate",
                        "version": version_of_run.get(run.run_id), "revision": tags.get("modelgate.revision"),
                        "verdict": tags.get("modelgate.verdict"), "actor": tags.get("modelgate.author"),
                        "pr": run.params.get("pr") or None, "gate_id": tags.get("modelgate.gate_id"),
                        "run_id": run.run_id, "metrics": _key_metrics(run.metrics)})
    for ev in audit.events(release.model_name):
        entries.append({"ms": ev.start_ms, **as_dict(ev)})
    entries.sort(key=lambda e: e.pop("ms"))
    aliases = {}
    for alias in (PRODUCTION, PREVIOUS, CANDIDATE):
        mv = reg.by_alias(release.model_name, alias)
        aliases[alias] = mv.version if mv else None
    pending = [claim.resume_hint(e) for e in claim.in_progress(audit, release.model_name)]
    return {"model": release.model_name, "aliases": aliases, "in_progress": pending, "events": entries}


def to_text(doc: dict[str, Any]) -> str:
    al = doc["aliases"]
    lines = [f"{doc['model']}: production {_v(al['production'])}, previous {_v(al['previous'])}, "
             f"candidate {_v(al['candidate'])}"]
    for hint in doc["in_progress"]:
        lines.append(f"  ! incomplete: {hint}")
    for e in doc["events"]:
        who = e.get("actor") or "-"
        if e["event"] == "gate":
            metrics = ", ".join(f"{k.split('.', 1)[1]}={v:g}" for k, v in e["metrics"].items())
            what = f"gate      {_v(e['version']):<5} {str(e['revision'])[:12]} {e['verdict']:<12} by {who}" + \
                (f"  PR #{e['pr']}" if e.get("pr") else "") + (f"  [{metrics}]" if metrics else "")
        else:
            extra = f" from {_v(e['from_version'])}" if e.get("from_version") else ""
            state = "" if e["state"] == "completed" else f" ({e['state']})"
            reason = f": {e['reason']}" if e.get("reason") else ""
            what = f"{e['event']:<9} {_v(e['version'])}{extra} by {who}{state}{reason}"
        lines.append(f"{e['at']}  {what}")
    return "\n".join(lines)


def _v(version: str | None) -> str:
    return f"v{version}" if version else "-"


def resolve(release: Release, uri: str, alias: str) -> dict[str, Any]:
    reg = Registry(uri)
    mv = reg.by_alias(release.model_name, alias)
    if mv is None:
        raise BadInput(f"model {release.model_name!r} has no alias {alias!r} in MLflow at {display_uri(uri)}",
                       path="alias")
    import json

    audit = AuditLog(uri, release.audit_experiment)
    pending = [claim.resume_hint(e) for e in claim.in_progress(audit, release.model_name)]
    revision = mv.tags.get("modelgate.revision", "")
    return {"model": release.model_name, "alias": alias, "version": mv.version,
            "source": mv.tags.get("modelgate.source"),
            "repo": mv.tags.get("modelgate.repo"), "revision": revision, "uri": mv.source,
            "served_name": f"{release.served_name_prefix}@{revision[:12]}", "verdict": mv.verdict,
            "gate_run_id": mv.run_id, "files": json.loads(mv.tags.get("modelgate.files", "{}")),
            "in_progress": pending}
