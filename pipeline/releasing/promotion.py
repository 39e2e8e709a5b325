"""Promotion and rollback: move the `production` alias, write the version tag, tell GitHub, record it all.

A release operation runs in three steps after its checks (policy.py; and the rollback path: the version that
becomes `previous`, or the rollback target, fetched and verified byte for byte, readiness.py) and its claim
(claim.py):

    aliases   `previous` -> the old production, `production` -> the new version (MLflow registry)
    tag       annotated git tag `<model>/v<N>` with revision, digests, gate run and approvers
    github    a GitHub deployment of that commit with a success status (when promotion.github is set)

Each finished step is recorded on the operation's audit run, so an interrupted operation resumes where it
stopped (`modelgate promote --version N` again) and never repeats a step's effect: aliases are set, not
toggled; an existing tag with the same revision is kept; the deployment is found by its promotion id.
Until the last step is done the audit run stays `in-progress`: `resolve` and `history` say so, and no
other promotion or rollback of the model can start, so alias and tag never disagree silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config.release import Release
from pipeline.core import tags as tagnames
from pipeline.errors import BadInput, Conflict, Refused
from pipeline.integrations.registry import PREVIOUS, PRODUCTION, ModelVersion, Registry
from pipeline.releasing import chain, claim, readiness
from pipeline.releasing.audit import COMPLETED, PROMOTE, ROLLBACK, AuditEvent, AuditLog, now_iso
from pipeline.releasing.gittag import ensure_tag, repo_root, tag_name
from pipeline.releasing.policy import (
    check_approvals,
    check_gate_passed,
    check_not_stale,
    check_signature,
    check_untampered,
    require_manager,
    resolve_version,
    version_record,
)
from pipeline.util.progress import Progress

STEPS = ("aliases", "tag", "github")


@dataclass
class Outcome:
    action: str  # promote | rollback
    model_name: str
    version: str
    from_version: str | None
    actor: str
    audit_run_id: str | None
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resumed: bool = False
    noop: bool = False


def _github_configured(release: Release) -> bool:
    gh = release.promotion.github
    if gh is None:
        return False
    if not os.environ.get("GITHUB_TOKEN"):
        raise BadInput("promotion.github is configured but GITHUB_TOKEN is not set", file=str(release.path),
                       path="promotion.github")
    return True


class Operation:
    """One promote or rollback, resumable: holds what the steps need, all of it recorded on the audit run."""

    def __init__(self, release: Release, reg: Registry, audit: AuditLog, ev: AuditEvent, target: ModelVersion,
                 progress: Progress):
        self.release, self.reg, self.audit, self.ev, self.target = release, reg, audit, ev, target
        self.progress = progress
        self.model = release.model_name
        self.notes: list[str] = []

    def run(self) -> None:
        for step in STEPS:
            if step in self.ev.steps:
                self.progress(f"{step}: already done (resuming)")
                continue
            getattr(self, f"step_{step}")()
            self.audit.step_done(self.ev, step)
        self.audit.finish(self.ev, COMPLETED)

    def step_aliases(self) -> None:
        v = self.target.version
        if self.ev.event == PROMOTE:
            previous = self.ev.from_version
        else:
            previous = self.ev.tags.get(tagnames.PREVIOUS_AFTER, "")
        if previous and previous != v:
            self.reg.set_alias(self.model, PREVIOUS, previous)
        else:
            self.reg.delete_alias(self.model, PREVIOUS)
        self.reg.set_alias(self.model, PRODUCTION, v)
        stamp = now_iso()
        key = tagnames.PROMOTED_AT if self.ev.event == PROMOTE else tagnames.ROLLED_BACK_TO_AT
        self.reg.set_version_tag(self.model, v, key, stamp)
        if self.ev.event == ROLLBACK and self.ev.from_version:
            self.reg.set_version_tag(self.model, self.ev.from_version, tagnames.ROLLED_BACK_AT, stamp)
        shown = "v" + previous if previous and previous != v else "none"
        self.progress(f"aliases: {PRODUCTION} -> v{v}, {PREVIOUS} -> {shown}")

    def step_tag(self) -> None:
        t = self.target
        name = tag_name(self.release.promotion.tag_format, self.model, t.version, str(self.release.path))
        run = self.reg.run(t.run_id) if t.run_id else None
        params = run.params if run else {}
        fields = {"model": self.model, "version": t.version, "revision": t.revision, "source": t.source,
                  "gate_run_id": t.run_id or "", "verdict": t.verdict,
                  "approved_by": self.ev.tags.get(tagnames.APPROVERS, "") or "-",
                  f"{self.ev.event}d_by": f"{self.ev.actor} at {self.ev.at}",
                  "promotion_id": self.ev.tags.get(tagnames.PROMOTION_ID, ""),
                  **{f"sha256 {k}": v for k, v in sorted(version_record(self.reg, t).pin.files.items())}}
        status = ensure_tag(repo_root(self.release.root), name, fields, actor=self.ev.actor,
                            target=params.get("repo_commit") or None, remote=self.release.promotion.git_remote)
        self.audit.set(self.ev, git_tag=name)
        self.progress(f"tag: {name} {status}" + (f", pushed to {self.release.promotion.git_remote}"
                                             if self.release.promotion.git_remote else ""))

    def step_github(self) -> None:
        gh = self.release.promotion.github
        if gh is None or not os.environ.get("GITHUB_TOKEN"):
            self.progress("github: not configured (promotion.github), no deployment created")
            return
        from pipeline.integrations import github

        t = self.target
        run = self.reg.run(t.run_id) if t.run_id else None
        ref = (run.params.get("repo_commit") if run else None) or self.ev.tags.get(tagnames.GIT_TAG)
        client = github.client(gh.repository, gh.api_url)
        payload = {"promotion_id": self.ev.tags.get(tagnames.PROMOTION_ID, self.ev.run_id), "model": self.model,
                   "version": t.version, "revision": t.revision, "action": self.ev.event}
        dep = client.ensure_deployment(ref or "", gh.environment, payload,
                                       f"{self.ev.event} {self.model} v{t.version} ({t.revision[:12]})")
        client.deployment_status(dep, "success", f"{self.model} v{t.version} is production",
                                 environment_url=gh.environment_url)
        url = getattr(dep, "url", "") or getattr(dep, "html_url", "") or str(getattr(dep, "id", ""))
        self.audit.set(self.ev, deployment_url=url)
        self.progress(f"github: deployment {getattr(dep, 'id', '?')} to {gh.environment} ({gh.repository})")


def _no_other_operation(audit: AuditLog, model: str, event: str) -> AuditEvent | None:
    """An interrupted operation of another kind blocks this one (Conflict); one of the same kind is returned."""
    pending = claim.in_progress(audit, model)
    if pending and pending[0].event != event:
        raise Conflict(claim.resume_hint(pending[0]))
    return pending[0] if pending else None


def _operate(release: Release, reg: Registry, audit: AuditLog, kind: str, target: ModelVersion, actor: str,
             progress: Progress, settle_s: float, *,
             begin: Callable[[ModelVersion | None], tuple[AuditEvent, str]],
             resuming: Callable[[AuditEvent], str]) -> Outcome:
    """What promote and rollback share once the target is known: nothing to do when it is production already;
    else `begin` (the operation's own checks, its audit run opened; returns it and the progress line) and the claim,
    or the interrupted operation on the same target resumed; then the steps, and the outcome."""
    production = reg.by_alias(release.model_name, PRODUCTION)
    resumable = claim.find_resumable(audit, release.model_name, kind, target.version)
    try:
        chain.check_production_link(release, audit, production)
        moved = False
    except Refused as exc:
        if kind != ROLLBACK:  # a rollback is how a verified version is restored; nothing else may build on it
            raise
        progress(f"warning: {exc.one_line()}; this rollback restores a verified version")
        moved = True
    check_untampered(reg, target)
    if resumable is None:
        if production and production.version == target.version and not moved:
            return Outcome(kind, release.model_name, target.version, None, actor, None, noop=True,
                           notes=[f"v{target.version} is already production; nothing to do"])
        ev, message = begin(production)
        claim.acquire(audit, ev, settle_s)
        progress(message)
    else:
        ev = resumable
        audit.set(ev, resumed_by=actor)
        progress(resuming(ev))
    Operation(release, reg, audit, ev, target, progress).run()
    return Outcome(kind, release.model_name, target.version, ev.from_version or None, actor, ev.run_id,
                   steps=list(ev.steps), resumed=resumable is not None)


def _was(production: ModelVersion | None) -> str:
    return "v" + production.version if production else "no production version"


def promote(release: Release, uri: str, version_ref: str, actor: str | None, *, override_reason: str | None = None,
            progress: Progress = print, settle_s: float = 1.0, home: Path | None = None) -> Outcome:
    """`home`: the model cache the rollback path is proven into (default: .modelgate beside release.yaml)."""
    actor = require_manager(release, actor, "promote")
    github_on = _github_configured(release)
    repo_root(release.root)  # the version tag needs the team's git repository: fail before any change
    reg = Registry(uri)
    _no_other_operation(chain.audit_log(release, uri), release.model_name, PROMOTE)
    mv = resolve_version(reg, release, version_ref)  # bad input (exit 2) before the policy's refusals
    audit = chain.sealing_log(release, uri, "promote")

    def begin(production: ModelVersion | None) -> tuple[AuditEvent, str]:
        override = check_gate_passed(mv, override_reason)
        check_signature(release, reg, mv)
        approvers = check_approvals(release, reg, audit, mv)
        check_not_stale(mv, production)
        # the version that becomes `previous` must still be fetchable, byte for byte (readiness.py)
        ready = readiness.at_promotion(release, reg, production, actor, home or release.root / ".modelgate",
                                       override_reason, progress)
        ev = audit.open(PROMOTE, release.model_name, mv.version, actor,
                        from_version=production.version if production else "", promotion_id=uuid.uuid4().hex,
                        revision=mv.revision, gate_run_id=mv.run_id, approvers=",".join(approvers),
                        override_reason=override, github="on" if github_on else "off", **ready)
        return ev, (f"promoting {release.model_name} v{mv.version} ({mv.revision[:12]}) over {_was(production)}; "
                    f"approved by {', '.join(approvers) or '-'}")

    return _operate(release, reg, audit, PROMOTE, mv, actor, progress, settle_s, begin=begin,
                    resuming=lambda ev: f"resuming the interrupted promotion of v{mv.version} (audit run "
                                        f"{ev.run_id}; done: {', '.join(ev.steps) or 'nothing'})")


def _previous_before(audit: AuditLog, model: str, version: str) -> str:
    """What production was before `version` last became production ('' if it never was or nothing was)."""
    made = [e for e in audit.verified(model, state=COMPLETED) if e.event in (PROMOTE, ROLLBACK)
            and e.version == version]
    return made[-1].from_version if made else ""


def rollback(release: Release, uri: str, to_ref: str | None, actor: str | None, reason: str | None, *,
             progress: Progress = print, settle_s: float = 1.0, home: Path | None = None) -> Outcome:
    actor = require_manager(release, actor, "roll back")
    if not reason or not reason.strip():
        raise BadInput("a rollback needs a reason (what went wrong)", path="--reason")
    why = reason.strip()
    github_on = _github_configured(release)
    repo_root(release.root)
    reg = Registry(uri)
    pending = _no_other_operation(chain.audit_log(release, uri), release.model_name, ROLLBACK)
    # a bare re-run resumes an interrupted rollback: `previous` may already have moved
    target = resolve_version(reg, release, to_ref or (pending.version if pending else PREVIOUS), "--to")
    audit = chain.sealing_log(release, uri, "roll back")

    def begin(production: ModelVersion | None) -> tuple[AuditEvent, str]:
        readiness.check_rollback_target(release, reg, audit, target)
        # its weights must still be fetchable, byte for byte, before the alias moves (readiness.py)
        ready = readiness.at_rollback(release, reg, target, actor, home or release.root / ".modelgate", progress)
        previous_after = _previous_before(audit, release.model_name, target.version)
        ev = audit.open(ROLLBACK, release.model_name, target.version, actor, reason=why,
                        from_version=production.version if production else "", previous_after=previous_after,
                        promotion_id=uuid.uuid4().hex, revision=target.revision, gate_run_id=target.run_id,
                        github="on" if github_on else "off", **ready)
        return ev, (f"rolling back {release.model_name} from {_was(production)} to v{target.version} "
                    f"({target.revision[:12]})")

    return _operate(release, reg, audit, ROLLBACK, target, actor, progress, settle_s, begin=begin,
                    resuming=lambda ev: f"resuming the interrupted rollback to v{target.version} (audit run "
                                        f"{ev.run_id})")
