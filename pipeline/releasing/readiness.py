"""Rollback readiness: the version a rollback would put back must still be fetchable, byte for byte.

A rollback only moves an alias; the deployment then pulls that version's pin. If the hub no longer serves
the revision (a rewritten or garbage-collected repository, a moved one) or serves other bytes under the same
names, the rollback fails exactly when it is needed. So the path is proven before it is needed:

    promote            the version that becomes `previous` (today's production) is fetched into the model cache
                       and every file's sha256 checked against its recorded digests (model/fetch.py, the gate's
                       own fetch); not ready: refused (exit 5, nothing moved) unless --override-reason, which
                       is recorded on the promotion's audit run
    rollback           the target is verified the same way before the alias moves; not ready: refused (exit 5)
    rollback --check   a rehearsal that moves nothing: the rollback's own policy checks, the fetch and digests,
                       and with --serve a vLLM boot and the gate's smoke probe; recorded as a `rollback-check`
                       audit event (exit 0 ready, 5 not ready, 3 when the environment failed)

Each check's result is recorded on the checked version as tags `modelgate.rollback_check.*` (at, by, how,
outcome, detail; `proven_*` for the last successful one) and in the audit trail (the promotion's or the
rollback's audit run, or the rehearsal's own), which `history` reads back as "last proven".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.release import Pin, Release
from pipeline.core import tags as tagnames
from pipeline.core.verdict import Verdict
from pipeline.errors import BadInput, DigestMismatch, InfraError, PinError, Refused
from pipeline.integrations.registry import PREVIOUS, VERSION_FILE, ModelVersion, Registry
from pipeline.releasing import chain, signing
from pipeline.releasing.audit import COMPLETED, PROMOTE, ROLLBACK, AuditLog, now_iso
from pipeline.releasing.policy import check_signature, check_untampered, resolve_version
from pipeline.util.progress import Progress

CHECK = "rollback-check"  # the audit event of a rehearsal
AT_PROMOTION, AT_ROLLBACK, REHEARSAL, REHEARSAL_SERVE = "at promotion", "at rollback", "rehearsal", \
    "rehearsal with serve"
READY, NOT_READY, OVERRIDDEN = "ready", "not-ready", "overridden"
TAG = tagnames.ROLLBACK_CHECK_PREFIX


@dataclass
class Readiness:
    model_name: str
    version: str
    ready: bool
    how: str
    detail: str  # what was proven, or why not
    at: str
    path: Path | None = None  # the verified copy in the model cache

    @property
    def outcome(self) -> str:
        return READY if self.ready else NOT_READY

    def line(self) -> str:
        if self.ready:
            return f"rollback to {self.model_name} v{self.version} is ready ({self.how}): {self.detail}"
        return f"rollback to {self.model_name} v{self.version} is NOT ready ({self.how}): {self.detail}"


def pin_of(reg: Registry, mv: ModelVersion) -> Pin:
    """The pin a version was gated on (source, repo, revision, per-file digests): its gate run's version.json, or
    a legacy version's tags."""
    try:
        record = reg.record(mv)
    except ValueError as exc:
        raise Refused(f"{mv.model_name} v{mv.version}: its record is unreadable ({exc}): its weights cannot be "
                      "fetched for a rollback") from exc
    if record is None:
        raise Refused(f"{mv.model_name} v{mv.version} names no complete pin (no {VERSION_FILE} in its gate run, "
                      "no legacy tags): its weights cannot be fetched for a rollback")
    return record.pin


def _why(exc: BadInput, pin: Pin) -> str:
    """The fetch's refusal, said as a rollback problem: which file, or which revision the repository lost."""
    if isinstance(exc, DigestMismatch):
        return f"the weights at {pin.repo}@{pin.short} no longer match the recorded digests: {exc.message}"
    if isinstance(exc, PinError) and exc.path in ("candidate.revision", "candidate.repo"):
        return f"revision {pin.revision} is no longer served by {pin.repo}: {exc.message}"
    return f"{pin.repo}@{pin.short}: {exc.message}"


def verify(release: Release, reg: Registry, mv: ModelVersion, home: Path, how: str,
           progress: Progress) -> Readiness:
    """Fetch the version's pin into the model cache and check every digest (model/fetch.py). The source's
    refusal or a wrong byte is `not ready` (with the reason); an environment failure raises InfraError."""
    from pipeline.model.fetch import fetch

    pin = pin_of(reg, mv)
    progress(f"proving the rollback path: fetching {mv.model_name} v{mv.version} ({pin.uri()}) and checking "
             f"{len(pin.files)} digest(s)")
    try:
        model_dir = fetch(pin, release.repo_location(pin), home,
                          file=f"{mv.model_name} v{mv.version} (rollback target)",
                          allowlist=release.remote_code_allowlist, progress=progress)
    except BadInput as exc:
        return Readiness(mv.model_name, mv.version, False, how, _why(exc, pin), now_iso())
    detail = (f"{len(pin.files)} file(s) fetched from {pin.repo}@{pin.short}, every sha256 matched"
              + (" (cached copy re-hashed, revision confirmed at the source)" if model_dir.cache_hit else ""))
    return Readiness(mv.model_name, mv.version, True, how, detail, now_iso(), model_dir.path)


def record_on_version(reg: Registry, result: Readiness, actor: str) -> None:
    """The check's result as tags on the checked version (the audit trail holds the same, see module doc)."""
    tags = {"at": result.at, "by": actor, "how": result.how, "outcome": result.outcome, "detail": result.detail[:4000]}
    if result.ready:
        tags.update(proven_at=result.at, proven_by=actor, proven_how=result.how)
    for key, value in tags.items():
        reg.set_version_tag(result.model_name, result.version, TAG + key, value)


def audit_tags(result: Readiness | None, override_reason: str | None = None) -> dict[str, str]:
    """What a promotion or rollback audit run records about the rollback path it proved (or had overridden)."""
    if result is None:
        return {"rollback_ready": "none"}
    tags = {"rollback_ready": READY if result.ready else OVERRIDDEN, "rollback_ready_version": result.version,
            "rollback_ready_at": result.at, "rollback_ready_detail": result.detail[:4000]}
    if not result.ready and override_reason:
        tags["rollback_ready_override"] = override_reason
    return tags


def at_promotion(release: Release, reg: Registry, previous: ModelVersion | None, actor: str, home: Path,
                 override_reason: str | None, progress: Progress) -> dict[str, str]:
    """Prove that `previous` (today's production, `previous` after the promotion) can be rolled back to.
    Returns the audit tags; raises Refused (nothing moved) when it cannot and no override reason was given.
    An environment failure (exit 3) is overridable too, and recorded as such."""
    if previous is None:
        progress("rollback path: no production version yet, nothing to roll back to")
        return audit_tags(None)
    reason = override_reason.strip() if override_reason and override_reason.strip() else None
    try:
        result = verify(release, reg, previous, home, AT_PROMOTION, progress)
    except InfraError as exc:
        if reason is None:
            raise
        result = Readiness(previous.model_name, previous.version, False, AT_PROMOTION,
                           f"could not be checked: {exc.one_line()}", now_iso())
    record_on_version(reg, result, actor)
    progress(result.line())
    if not result.ready:
        if reason is None:
            raise Refused(f"the rollback path is broken: {result.line()}. Refusing to promote over it (nothing "
                          "moved): restore the weights at the source, or promote with --override-reason")
        progress(f"rollback readiness overridden by {actor}: {reason}")
    return audit_tags(result, reason)


def check_rollback_target(release: Release, reg: Registry, audit: AuditLog, target: ModelVersion) -> None:
    """A rollback target must have passed a gate or have been production (Refused otherwise); one that never was
    production must carry a signed release gate's record, as for a promotion."""
    was_production = any(e.version == target.version for e in audit.verified(release.model_name, state=COMPLETED)
                         if e.event in (PROMOTE, ROLLBACK))
    if target.verdict != Verdict.PASSED and not was_production:
        raise Refused(f"{release.model_name} v{target.version}: gate verdict {target.verdict!r} and never "
                      "production: a rollback target must have passed a gate or have been production")
    if not was_production:  # never released: only a signed release gate's record (as for promote)
        check_signature(release, reg, target)


def at_rollback(release: Release, reg: Registry, target: ModelVersion, actor: str, home: Path,
                progress: Progress) -> dict[str, str]:
    """Verify the rollback target before any alias moves; Refused (nothing moved) when it fails."""
    result = verify(release, reg, target, home, AT_ROLLBACK, progress)
    record_on_version(reg, result, actor)
    progress(result.line())
    if not result.ready:
        raise Refused(f"cannot roll back: {result.line()}. Nothing moved")
    return audit_tags(result)


# (release, verified model directory, pin, log file, progress) -> (it served and answered, what happened)
Boot = Callable[[Release, Path, Pin, Path, Progress], tuple[bool, str]]


def serve_and_probe(release: Release, model_dir: Path, pin: Pin, log_file: Path,
                    progress: Progress) -> tuple[bool, str]:
    """Boot the verified copy with vLLM (the gate's serving settings) and run the gate's smoke probe. The version
    failing to load or answering the probe with an error is (False, why); the environment's faults raise."""
    from pipeline.errors import StartupError
    from pipeline.serving import startup
    from pipeline.serving.probe import probe
    from pipeline.serving.vllm_server import VllmServer

    serving = release.serving
    name = release.served_name(pin)
    server = VllmServer(model_dir, name, serving, log_file, progress=progress)
    try:
        with server as endpoint:
            result = probe(endpoint.base_url, name, serving.probe.prompt, serving.probe.max_tokens,
                           timeout_s=serving.request_timeout_s, api_key=endpoint.api_key)
    except StartupError as exc:
        try:
            text = log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        found = startup.diagnose(text, returncode=exc.returncode, timed_out=exc.timed_out)
        if found.cause == startup.CANDIDATE:
            return False, f"does not load in vLLM: {found.first_error or exc.one_line()} (log: {log_file})"
        raise
    if result.refusals:
        return False, f"failed the smoke probe: {result.refusals[0].line()} (log: {log_file})"
    return True, (f"served by vLLM as {name}, answered a chat and a streamed completion "
                  f"(chat {result.chat_latency_s:.2f}s)")


def rehearse(release: Release, uri: str, to_ref: str | None, actor: str | None, *, home: Path, serve: bool = False,
             progress: Progress = print, boot: Boot = serve_and_probe) -> Readiness:
    """`modelgate rollback --check`: everything a rollback to `to_ref` (default: previous) would check, plus the
    fetch and digests (and with `serve` a boot and the smoke probe), with nothing moved. Recorded (audit event
    `rollback-check`, version tags) whatever the outcome; the caller turns `not ready` into exit 5."""
    if not actor or not actor.strip():
        raise BadInput("who is rehearsing? give --actor (or set MODELGATE_ACTOR)", path="--actor")
    actor = actor.strip()
    if serve and release.serving.mode != "spawn":
        raise BadInput("--serve boots the version with vLLM, but serving.mode is external", file=str(release.path),
                       path="serving.mode")
    reg = Registry(uri)
    audit = _rehearsal_log(release, uri)
    target = resolve_version(reg, release, to_ref or PREVIOUS, "--to")
    how = REHEARSAL_SERVE if serve else REHEARSAL
    try:
        check_untampered(reg, target)
        check_rollback_target(release, reg, audit, target)
    except Refused as exc:
        result = Readiness(target.model_name, target.version, False, how, exc.one_line(), now_iso())
    else:
        result = verify(release, reg, target, home, how, progress)
        if result.ready and serve:
            assert result.path is not None  # a verified copy
            log_file = home / "rollback-checks" / f"{release.model_name}-v{target.version}-server.log"
            ok, what = boot(release, result.path, pin_of(reg, target), log_file, progress)
            result = Readiness(target.model_name, target.version, ok, how,
                               f"{result.detail}; {what}" if ok else what, now_iso(), result.path)
    record_on_version(reg, result, actor)
    audit.open(CHECK, release.model_name, target.version, actor, state=COMPLETED, outcome=result.outcome,
               how=how, detail=result.detail[:4000])
    progress(result.line())
    return result


def _rehearsal_log(release: Release, uri: str) -> AuditLog:
    """A rehearsal is recorded sealed where the audit key is at hand (the rollback workflow), else unsealed:
    `history` then shows it as unverified, and no release command relies on it."""
    sealer = signing.load_signer(env=signing.AUDIT_KEY_ENV)
    trusted = sealer is not None and sealer.key_id in {k.id for k in release.audit_keys}
    return chain.audit_log(release, uri, sealer=sealer if trusted else None)


def last_proven(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per version, from the audit events of `history` (oldest first): when its rollback path was last proven
    (at, by, how, audit run) and the last check's outcome when it was not ready."""
    out: dict[str, dict[str, Any]] = {}

    def note(version: str | None, ready: bool, e: dict[str, Any], how: str, detail: str) -> None:
        if not version:
            return
        entry = out.setdefault(version, {"proven_at": None, "proven_by": None, "proven_how": None,
                                         "proven_audit_run_id": None, "last_check": None})
        entry["last_check"] = {"at": e.get("at"), "by": e.get("actor"), "how": how,
                               "outcome": READY if ready else NOT_READY, "detail": detail}
        if ready:
            entry.update(proven_at=e.get("at"), proven_by=e.get("actor"), proven_how=how,
                         proven_audit_run_id=e.get("audit_run_id"))

    for e in events:
        if e.get("state") not in (None, COMPLETED):
            continue
        if e["event"] == CHECK:
            note(e.get("version"), e.get("outcome") == READY, e, e.get("how") or REHEARSAL, e.get("detail") or "")
        elif e["event"] == PROMOTE and e.get("rollback_ready") in (READY, OVERRIDDEN):
            note(e.get("rollback_ready_version"), e["rollback_ready"] == READY, e, AT_PROMOTION,
                 e.get("rollback_ready_detail") or "")
        elif e["event"] == ROLLBACK and e.get("rollback_ready") == READY:
            note(e.get("version"), True, e, AT_ROLLBACK, e.get("rollback_ready_detail") or "")
    return out
