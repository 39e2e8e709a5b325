"""The chain of trust from a signed release gate to what production serves, verified link by link.

    gate statement   signed by a key of signing.public_keys, valid when the tracking server created the version;
                     its pin, digests, items.json and report.json equal the record (policy.check_signature)
    model version    its MLflow `source` and record equal the signed pin (policy.check_untampered, check_signature)
    audit trail      approvals, promotions, rollbacks, readiness checks sealed by a key of signing.audit_keys
                     (seal.py); unsealed or changed events are not believed
    `production`     the alias must name the version that the last completed, verified promotion or rollback made
                     production (or the target of one in progress): an alias moved with MLflow's API is refused

Every release command and `resolve` go through here; each broken link is a `Refused` (exit 5) naming it. The gate
reads its baseline through `baseline_verifier`: a production baseline that does not verify stops the gate
(`BaselineUnverified`, exit 7).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from pipeline.errors import BaselineUnverified, Refused
from pipeline.integrations.registry import (
    Baseline,
    BaselineCheck,
    BaselineVerifier,
    ModelVersion,
    Registry,
)
from pipeline.releasing import signing
from pipeline.releasing.audit import COMPLETED, IN_PROGRESS, PROMOTE, ROLLBACK, AuditEvent, AuditLog
from pipeline.releasing.policy import check_signature, check_untampered

if TYPE_CHECKING:
    from pipeline.config.release import Release


def audit_log(release: Release, uri: str, *, sealer: signing.Signer | None = None) -> AuditLog:
    """The model's audit trail, verified with release.yaml's audit keys (sealed with `sealer` when given)."""
    return AuditLog(uri, release.audit_experiment, release.root / "mlflow" / "artifacts",
                    keys=release.audit_keys, sealer=sealer)


def sealing_log(release: Release, uri: str, action: str) -> AuditLog:
    """The audit trail of a release command that writes to it: it must hold a trusted audit key, or it refuses
    before anything is written (its events would be believed by no one, the next command included)."""
    if not release.audit_keys:
        raise Refused(f"{release.path}: no audit keys configured (signing.audit_keys): no approval, promotion or "
                      f"rollback could be verified, so nobody may {action} (`modelgate keygen`, see docs)")
    sealer = signing.load_signer(env=signing.AUDIT_KEY_ENV)
    if sealer is None:
        raise Refused(f"to {action}, the audit key must be in ${signing.AUDIT_KEY_ENV} (the production "
                      "environment's secret: run the promote or rollback workflow)")
    if sealer.key_id not in {k.id for k in release.audit_keys}:
        raise Refused(f"the audit key in ${signing.AUDIT_KEY_ENV} ({sealer.key_id}) is not in signing.audit_keys "
                      f"of {release.path}")
    return audit_log(release, uri, sealer=sealer)


def operations(audit: AuditLog, model: str) -> list[AuditEvent]:
    """The verified promotions and rollbacks of the model, oldest first."""
    return [e for e in audit.verified(model) if e.event in (PROMOTE, ROLLBACK)]


def expected_production(audit: AuditLog, model: str) -> tuple[AuditEvent | None, list[AuditEvent]]:
    """(the last completed verified promotion or rollback, the verified ones in progress)."""
    ops = operations(audit, model)
    done = [e for e in ops if e.state == COMPLETED]
    return (done[-1] if done else None), [e for e in ops if e.state == IN_PROGRESS]


def check_production_link(release: Release, audit: AuditLog, mv: ModelVersion | None) -> AuditEvent | None:
    """The `production` alias (`mv`, None when unset) must be what the verified audit trail made production.
    Returns the event that did. Refused (naming the link) when the alias was moved outside modelgate."""
    model = release.model_name
    gone = [e for e in audit.events(model, deleted=True) if e.verified and e.event in (PROMOTE, ROLLBACK)]
    if gone:
        raise Refused(f"link audit trail: {len(gone)} verified promotion or rollback audit run(s) of {model} were "
                      f"deleted in MLflow ({', '.join(e.run_id for e in gone)}: {gone[-1].event} of "
                      f"v{gone[-1].version} by {gone[-1].actor} at {gone[-1].at}): the trail cannot say what "
                      "production is. Restore them (`mlflow runs restore --run-id ...`)")
    last, pending = expected_production(audit, model)
    allowed = {e.version for e in pending} | ({last.version} if last else set())
    current = mv.version if mv else None
    if current is None:
        if last is None:
            return None
        raise Refused(f"link `production` alias: {model} has no production alias, but the verified audit trail "
                      f"says v{last.version} ({last.event} by {last.actor} at {last.at}, audit run {last.run_id}): "
                      "the alias was deleted outside modelgate")
    if current in allowed:
        return next((e for e in pending if e.version == current), last)
    said = (f"the last verified promotion or rollback made v{last.version} production ({last.event} by "
            f"{last.actor} at {last.at}, audit run {last.run_id})" if last else
            "no verified promotion or rollback ever made a version production")
    unverified = [e for e in audit.events(model) if not e.verified and e.event in (PROMOTE, ROLLBACK)
                  and e.version == current]
    forged = (f"; {len(unverified)} audit event(s) for v{current} do not verify "
              f"({unverified[-1].problem})" if unverified else "")
    raise Refused(f"link `production` alias: it points at {model} v{current}, but {said}{forged}: the alias "
                  "was moved outside modelgate. Refusing it; restore it with `modelgate rollback --to "
                  f"{last.version if last else '<version>'}`")


def baseline_verifier(release: Release, uri: str) -> BaselineVerifier:
    """What the gate checks of production's baseline before it pairs with it: the alias link (with audit keys)
    and the gate record and signature, before anything is read; then that the items.json and report.json read
    are the signed ones (their sha256 in the statement). With no signing keys at all nothing can be verified:
    the baseline is marked so (such a gate's record can never be promoted either)."""

    def verify(reg: Registry, mv: ModelVersion) -> BaselineCheck:
        where = f"the production baseline ({release.model_name} v{mv.version}, gate run {mv.run_id})"
        if not release.signing_keys:
            return lambda b: dataclasses.replace(b, verified="NOT verified: release.yaml trusts no signing keys "
                                                             "(signing.public_keys)")
        try:
            if release.audit_keys:
                check_production_link(release, audit_log(release, uri), mv)
            check_untampered(reg, mv)
            stmt: dict[str, Any] = check_signature(release, reg, mv)
        except Refused as exc:
            raise BaselineUnverified(f"{where} does not verify: {exc.one_line()}") from None
        signed_items = str(stmt.get("items_sha256") or "")
        if not signed_items:
            raise BaselineUnverified(f"{where} does not verify: its signed statement does not cover items.json "
                                     "(signed before baselines were signed): re-run the release gate of production's "
                                     "pin so its per-item results are signed")

        def check(baseline: Baseline) -> Baseline:
            if signed_items != baseline.items_sha256:
                raise BaselineUnverified(f"{where} does not verify: items.json (sha256 {baseline.items_sha256[:16]}) "
                                         f"is not the one its gate signed ({signed_items[:16]}): the per-item "
                                         "results were rewritten after the gate")
            if baseline.report_sha256 != stmt.get("report_sha256"):
                raise BaselineUnverified(f"{where} does not verify: report.json (its load samples) is not the one "
                                         "its gate signed: it was rewritten after the gate")
            return dataclasses.replace(baseline, verified=f"verified: signed by {stmt.get('key_id')} at "
                                                          f"{stmt.get('signed_at')}; items.json and report.json as "
                                                          "signed")
        return check

    return verify
