"""`modelgate history` and `modelgate resolve`: what was released, when, by whom, on which evidence.

Read from MLflow only: gate runs (the tracking experiment), model versions and aliases (the registry),
approvals, promotions and rollbacks (the audit experiment, which records every alias move). Nothing is believed
because it is there: `history` marks every audit event whose seal does not verify and says whether the
`production` alias is where the verified trail put it; `resolve` (the deploy hand-off) verifies the whole chain
(releasing/chain.py) and prints nothing but a verified pin.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipeline.config.release import Release
from pipeline.core import tags as tagnames
from pipeline.errors import BadInput, Refused
from pipeline.integrations.registry import CANDIDATE, PREVIOUS, PRODUCTION, Registry
from pipeline.integrations.tracking import display_uri, gate_runs
from pipeline.releasing import chain, claim, readiness
from pipeline.releasing.audit import as_dict
from pipeline.releasing.policy import check_signature, check_untampered, version_record


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
    audit = chain.audit_log(release, uri)
    versions = reg.versions(release.model_name) if reg.model_exists(release.model_name) else []
    version_of_run = {v.run_id: v.version for v in versions}
    entries: list[dict[str, Any]] = []
    for run in gate_runs(uri, release.tracking_experiment, release.model_name):
        tags = run.tags
        entries.append({"ms": run.start_ms, "at": _iso(run.start_ms), "event": "gate",
                        "version": version_of_run.get(run.run_id), "revision": tags.get(tagnames.REVISION),
                        "verdict": tags.get(tagnames.VERDICT), "actor": tags.get(tagnames.AUTHOR),
                        "pr": run.params.get("pr") or None, "gate_id": tags.get(tagnames.GATE_ID),
                        "run_id": run.run_id, "metrics": _key_metrics(run.metrics)})
    for ev in audit.events(release.model_name):
        entries.append({"ms": ev.start_ms, **as_dict(ev)})
    entries.sort(key=lambda e: e.pop("ms"))
    aliases = {}
    for alias in (PRODUCTION, PREVIOUS, CANDIDATE):
        mv = reg.by_alias(release.model_name, alias)
        aliases[alias] = mv.version if mv else None
    pending = [claim.resume_hint(e) for e in claim.in_progress(audit, release.model_name)]
    proven = readiness.last_proven([e for e in entries if e.get("verified", True)])
    try:
        chain.check_production_link(release, audit, reg.by_alias(release.model_name, PRODUCTION))
        link = None
    except Refused as exc:
        link = exc.one_line()
    return {"model": release.model_name, "aliases": aliases, "production_link": link, "in_progress": pending,
            "events": entries,
            "rollback_readiness": proven, "rollback_path": _rollback_path(reg, release.model_name, aliases, proven)}


def _rollback_path(reg: Registry, model: str, aliases: dict[str, str | None],
                   proven: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """For the current `previous`: when its rollback path was last proven (audit trail), and the last check
    recorded on the version (which also holds a check that refused a promotion)."""
    version = aliases.get(PREVIOUS)
    if not version:
        return None
    mv = reg.version(model, version)
    tags = mv.tags if mv else {}
    last = {k.removeprefix(readiness.TAG): v for k, v in tags.items() if k.startswith(readiness.TAG)
            and not k.removeprefix(readiness.TAG).startswith("proven_")}
    entry = proven.get(version, {})
    return {"version": version, "proven_at": entry.get("proven_at"), "proven_by": entry.get("proven_by"),
            "proven_how": entry.get("proven_how"), "last_check": last or entry.get("last_check")}


def to_text(doc: dict[str, Any]) -> str:
    al = doc["aliases"]
    lines = [f"{doc['model']}: production {_v(al['production'])}, previous {_v(al['previous'])}, "
             f"candidate {_v(al['candidate'])}"]
    if doc.get("production_link"):
        lines.append(f"  ! NOT VERIFIED: {doc['production_link']}")
    for hint in doc["in_progress"]:
        lines.append(f"  ! incomplete: {hint}")
    path = doc.get("rollback_path")
    if path:
        lines.append(f"  {_path_line(path)}")
    for e in doc["events"]:
        who = e.get("actor") or "-"
        if e["event"] == "gate":
            metrics = ", ".join(f"{k.split('.', 1)[1]}={v:g}" for k, v in e["metrics"].items())
            what = f"gate      {_v(e['version']):<5} {str(e['revision'])[:12]} {e['verdict']:<12} by {who}" + \
                (f"  PR #{e['pr']}" if e.get("pr") else "") + (f"  [{metrics}]" if metrics else "")
        elif e["event"] == readiness.CHECK:
            what = (f"{e['event']} {_v(e['version'])} {e.get('outcome', '?')} ({e.get('how', '?')}) by {who}"
                    + (f": {e['detail']}" if e.get("outcome") != readiness.READY and e.get("detail") else ""))
        else:
            extra = f" from {_v(e['from_version'])}" if e.get("from_version") else ""
            state = "" if e["state"] == "completed" else f" ({e['state']})"
            reason = f": {e['reason']}" if e.get("reason") else ""
            what = f"{e['event']:<9} {_v(e['version'])}{extra} by {who}{state}{reason}" + _readiness_note(e)
        if e.get("verified") is False:
            what += f"  [UNVERIFIED: {e.get('unverified')}]"
        lines.append(f"{e['at']}  {what}")
    return "\n".join(lines)


def _path_line(path: dict[str, Any]) -> str:
    """`rollback path: previous v1 last proven <at> (at promotion, by bob)`, or why it is not."""
    head = f"rollback path: previous {_v(path['version'])}"
    proven = (f"last proven {path['proven_at']} ({path['proven_how']}, by {path['proven_by']})"
              if path.get("proven_at") else "never proven (run `modelgate rollback --check`)")
    last = path.get("last_check") or {}
    if last.get("outcome") == readiness.NOT_READY:
        return (f"{head} NOT READY at its last check {last.get('at')} ({last.get('how')}): {last.get('detail')}; "
                f"{proven}")
    return f"{head} {proven}"


def _readiness_note(e: dict[str, Any]) -> str:
    """What a promotion or rollback proved about the rollback path (or had overridden)."""
    state = e.get("rollback_ready")
    if state == readiness.READY:
        return f"; rollback path to {_v(e.get('rollback_ready_version'))} proven"
    if state == readiness.OVERRIDDEN:
        return (f"; rollback path to {_v(e.get('rollback_ready_version'))} NOT proven, overridden: "
                f"{e.get('rollback_ready_override')} ({e.get('rollback_ready_detail')})")
    return ""


def _v(version: str | None) -> str:
    return f"v{version}" if version else "-"


def resolve(release: Release, uri: str, alias: str) -> dict[str, Any]:
    """The pin an alias points at, for a deployment, after verifying every link (releasing/chain.py): for
    `production`, that the alias is where the verified audit trail put it; for any alias, that the version's
    record is untampered and signed by a trusted release gate key, with the same source and digests. Refused
    (exit 5, naming the link) otherwise: an unverified pin is never printed."""
    reg = Registry(uri)
    mv = reg.by_alias(release.model_name, alias)
    audit = chain.audit_log(release, uri)
    if alias == PRODUCTION:
        chain.check_production_link(release, audit, mv)
    if mv is None:
        raise BadInput(f"model {release.model_name!r} has no alias {alias!r} in MLflow at {display_uri(uri)}",
                       path="alias")
    pending = [claim.resume_hint(e) for e in claim.in_progress(audit, release.model_name)]
    try:
        check_untampered(reg, mv)
        stmt = check_signature(release, reg, mv)
    except Refused as exc:
        raise Refused(f"link gate record of alias {alias!r}: {exc.one_line()}") from None
    pin = version_record(reg, mv).pin
    return {"model": release.model_name, "alias": alias, "version": mv.version, "source": pin.source,
            "repo": pin.repo, "revision": pin.revision, "uri": mv.source,
            "served_name": f"{release.served_name_prefix}@{pin.revision[:12]}", "verdict": mv.verdict,
            "gate_run_id": mv.run_id, "files": pin.files, "in_progress": pending,
            "verified": {"signed_by": stmt.get("key_id"), "signed_at": stmt.get("signed_at"),
                         "alias": "matches the verified audit trail" if alias == PRODUCTION else "not checked"}}
