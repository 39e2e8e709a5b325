"""`modelgate approve`: a release manager's recorded approval of one gated model version.

Only listed release managers; never the author of the change (recorded at gate time); only a version
whose gate passed or was inconclusive; a reason is required. Recorded as an audit run, and as a line of the
version's description ("<at> APPROVED by <actor>: <reason>", audit.py) where MLflow's UI shows it (no version
tag: the versions table keeps its few short tags). Approving twice is a no-op that says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.release import Release
from pipeline.core.verdict import Verdict
from pipeline.errors import BadInput, Refused
from pipeline.integrations.registry import Registry
from pipeline.releasing.audit import APPROVE, COMPLETED
from pipeline.releasing.chain import sealing_log
from pipeline.releasing.policy import (
    check_signature,
    check_untampered,
    require_manager,
    resolve_version,
    version_record,
)


@dataclass(frozen=True)
class Approval:
    version: str
    actor: str
    at: str
    reason: str
    audit_run_id: str
    new: bool


def approve(release: Release, uri: str, version_ref: str, actor: str | None, reason: str | None) -> Approval:
    actor = require_manager(release, actor, "approve")
    if not reason or not reason.strip():
        raise BadInput("an approval needs a reason (what you checked)", path="--reason")
    reg = Registry(uri)
    mv = resolve_version(reg, release, version_ref)
    author = version_record(reg, mv).author
    if actor.casefold() == author.casefold():
        raise Refused(f"{actor} authored {release.model_name} v{mv.version}: a change needs a release manager "
                      "other than its author to approve it")
    if mv.verdict not in (Verdict.PASSED, Verdict.INCONCLUSIVE):
        raise Refused(f"{release.model_name} v{mv.version}: its gate verdict is {mv.verdict!r}; there is "
                      "nothing to approve")
    check_untampered(reg, mv)
    check_signature(release, reg, mv)  # only a signed release gate's record is worth approving
    audit = sealing_log(release, uri, "approve")
    for ev in audit.approvals(release.model_name, mv.version):
        if ev.verified and ev.actor.casefold() == actor.casefold():
            return Approval(mv.version, ev.actor, ev.at, ev.reason, ev.run_id, new=False)
    ev = audit.open(APPROVE, release.model_name, mv.version, actor, state=COMPLETED, reason=reason.strip(),
                    revision=mv.revision, gate_run_id=mv.run_id, author=author)
    return Approval(mv.version, actor, ev.at, ev.reason, ev.run_id, new=True)
