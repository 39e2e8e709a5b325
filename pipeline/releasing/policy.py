"""The release policy: who may act, and what a model version must show before it becomes production.

Every check here reads and refuses; nothing is written. Refusals are `Refused` (exit 5) with the reason,
bad arguments (unknown version or alias) are `BadInput` (exit 2).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from typing import Any

from pipeline.config.release import Release
from pipeline.core.rundir import ITEMS_FILE
from pipeline.core.verdict import VERDICTS, Verdict
from pipeline.errors import BadInput, Refused
from pipeline.integrations.registry import (
    BASELINE_TAG,
    REVISION_TAG,
    RUN_TAG,
    VERDICT_TAG,
    VERSION_FILE,
    ModelVersion,
    Registry,
    VersionRecord,
)
from pipeline.integrations.tracking import EXIT_CODE_PARAM, VERDICT_PARAM, param_key
from pipeline.releasing import signing
from pipeline.releasing.audit import AuditLog


def resolve_version(reg: Registry, release: Release, ref: str, arg: str = "--version") -> ModelVersion:
    """`3`, `v3`, an alias (`candidate`, `production`, `previous`) or `pinned` (the newest version gated on
    release.yaml's current pin) -> the model version."""
    name = release.model_name
    ref = str(ref).strip()
    number = ref[1:] if ref[:1] in "vV" and ref[1:].isdigit() else ref
    if number.isdigit():
        mv = reg.version(name, number)
        if mv is None:
            raise BadInput(f"model {name!r} has no version {number} in the registry", path=arg)
        return mv
    if ref == "pinned":  # the newest version gated on the pin release.yaml holds now (what was merged)
        pinned = [v for v in reg.versions(name) if v.revision == release.candidate.revision] \
            if reg.model_exists(name) else []
        if not pinned:
            raise BadInput(f"no gated version of {name!r} has the pinned revision {release.candidate.revision} "
                           "(run `modelgate gate` first)", path=arg)
        return pinned[-1]
    mv = reg.by_alias(name, ref)
    if mv is None:
        raise BadInput(f"model {name!r} has no alias {ref!r} (aliases: candidate, production, previous)",
                       path=arg)
    return mv


def require_manager(release: Release, actor: str | None, action: str) -> str:
    if not actor or not actor.strip():
        raise BadInput("who is acting? give --actor (or set MODELGATE_ACTOR)", path="--actor")
    actor = actor.strip()
    managers = release.promotion.release_managers
    if not managers:
        raise Refused(f"{release.path}: promotion.release_managers is empty: nobody may {action}")
    if not release.promotion.is_manager(actor):
        raise Refused(f"{actor!r} is not a release manager of {release.model_name} (promotion.release_managers "
                      f"in {release.path}) and may not {action}")
    return actor


def version_record(reg: Registry, mv: ModelVersion) -> VersionRecord:
    """The version's full record (registry.VersionRecord); Refused when it has none or it is unreadable."""
    where = f"{mv.model_name} v{mv.version}"
    try:
        record = reg.record(mv)
    except ValueError as exc:
        raise Refused(f"{where}: its record is unreadable ({exc}); re-gate the candidate") from None
    if record is None:
        raise Refused(f"{where} was not registered by a modelgate gate: its gate run holds no {VERSION_FILE}")
    return record


def check_untampered(reg: Registry, mv: ModelVersion) -> dict:
    """The version's tags and its full record (the gate run's version.json, or a legacy version's tags) must still
    say what its gate run recorded as params (run params cannot be edited in MLflow). Returns those params."""
    where = f"{mv.model_name} v{mv.version}"
    tags = mv.tags
    if RUN_TAG not in tags or not mv.run_id:
        raise Refused(f"{where} was not registered by a modelgate gate (no gate run): it cannot be released")
    if tags[RUN_TAG] != mv.run_id:
        raise Refused(f"{where}: tag {RUN_TAG} {tags[RUN_TAG]} does not match the version's run {mv.run_id}: the "
                      "version tags were changed after the gate")
    run = reg.run(mv.run_id)
    if run is None:
        raise Refused(f"{where}: its gate run {mv.run_id} no longer exists in MLflow")
    if not run.active:
        raise Refused(f"{where}: its gate run {mv.run_id} was deleted in MLflow: the evidence is gone, it cannot "
                      "be released (restore the run, or re-gate the candidate)")
    params, run_tags = run.params, run.tags
    if params.get("gate_kind", signing.RELEASE) != signing.RELEASE:  # a param: what the gate itself was
        raise Refused(f"{where}: recorded by an {params['gate_kind']} gate; only a release gate's record can be "
                      "promoted")
    record = version_record(reg, mv)
    pin = record.pin
    # a legacy version's run may predate a param (digest.*, author, baseline_version): then it is not compared;
    # a version.json record has them all, so a missing one is a difference
    strict = record.layout == "artifact"
    problems = []
    for key in ("revision", "repo", "source"):
        if getattr(pin, key) != params.get(key):
            problems.append(f"{key} {getattr(pin, key)!r} (gate recorded {params.get(key)!r})")
    if tags.get(REVISION_TAG) != params.get("revision"):
        problems.append(f"tag {REVISION_TAG} {tags.get(REVISION_TAG)!r} (gate recorded {params.get('revision')!r})")
    for what, prefix, mine in (("file digests", "file_sha256.", pin.files), ("digests", "digest.", record.digests)):
        recorded = {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}
        if prefix == "digest." and not recorded and not strict:
            continue
        keyed = {param_key(k): v for k, v in mine.items()}
        if keyed != recorded:
            changed = sorted(set(recorded) ^ set(keyed) | {k for k, v in keyed.items() if recorded.get(k) != v})
            problems.append(f"{what} ({', '.join(changed)})")
    for key, value in (("author", record.author), ("baseline_version", record.baseline_version),
                       ("baseline_version", tags.get(BASELINE_TAG, ""))):
        if (strict or key in params) and params.get(key) != value:
            problems.append(f"{key} {value!r} (gate recorded {params.get(key)!r})")
    if record.gate_kind != signing.RELEASE:
        problems.append(f"gate_kind {record.gate_kind!r} (gate recorded {params.get('gate_kind', signing.RELEASE)!r})")
    verdict = tags.get(VERDICT_TAG)
    # the verdict and exit code are params of the gate run (written once, immutable in MLflow); the run's tag and
    # metric of the same name can be written again by anyone with write access, so they must agree with the params.
    # A run recorded before the params existed: its exit-code metric must have been logged exactly once.
    recorded_verdict = params.get(VERDICT_PARAM, run_tags.get(VERDICT_TAG))
    if EXIT_CODE_PARAM in params:
        exit_codes = [float(params[EXIT_CODE_PARAM])]
        metric = run.metrics.get("gate.exit_code")
        if metric is not None and metric != exit_codes[0]:
            exit_codes.append(metric)
    else:
        exit_codes = reg.metric_history(mv.run_id, "gate.exit_code")
    expected_exit = VERDICTS.get(Verdict(verdict)) if verdict in set(Verdict) else None
    if verdict != recorded_verdict or run_tags.get(VERDICT_TAG) != recorded_verdict \
            or len(exit_codes) != 1 or expected_exit != int(exit_codes[0]):
        shown = ", ".join(f"{c:g}" for c in exit_codes) or "none"
        problems.append(f"verdict {verdict!r} (gate run says {recorded_verdict!r}"
                        + (f", its tag {run_tags.get(VERDICT_TAG)!r}"
                           if run_tags.get(VERDICT_TAG) != recorded_verdict else "")
                        + f", exit code {shown})")
    if problems:
        shown_where = VERSION_FILE if strict else "version tags"
        raise Refused(f"{where}: its tags and {shown_where} differ from what its gate run {mv.run_id} recorded: "
                      f"{'; '.join(problems)}. Refusing a tampered version; re-gate the candidate")
    return params


def check_gate_passed(mv: ModelVersion, override_reason: str | None) -> str | None:
    """Passed: fine. Inconclusive: only with a release manager's override reason (returned). Else refused."""
    where = f"{mv.model_name} v{mv.version}"
    if mv.verdict == Verdict.PASSED:
        return None
    if mv.verdict == Verdict.INCONCLUSIVE:
        if override_reason and override_reason.strip():
            return override_reason.strip()
        raise Refused(f"{where}: its gate was inconclusive; promote it only with --override-reason, "
                      "given by a release manager who read the report")
    raise Refused(f"{where}: its gate verdict is {mv.verdict!r}; only a passed gate can be promoted")


def check_approvals(release: Release, reg: Registry, audit: AuditLog, mv: ModelVersion) -> list[str]:
    """Distinct release managers other than the author who approved this version. Refused if too few."""
    shown_author = version_record(reg, mv).author
    author = shown_author.casefold()
    approvers: list[str] = []
    ignored = 0
    for ev in audit.approvals(release.model_name, mv.version):
        if not ev.verified:  # not sealed by the production environment's audit key: a claim, not an approval
            ignored += 1
            continue
        who = ev.actor.casefold()
        if release.promotion.is_manager(ev.actor) and who != author and who not in {a.casefold() for a in approvers}:
            approvers.append(ev.actor)
    need = release.promotion.approvals_required
    if len(approvers) < need:
        have = f"approved by {', '.join(approvers)}" if approvers else "no approval yet"
        if ignored:
            have += f" ({ignored} approval record(s) ignored: not sealed by a trusted audit key)"
        raise Refused(f"{release.model_name} v{mv.version} needs {need} approval(s) by release managers other "
                      f"than its author ({shown_author}); {have}. "
                      f"Run `modelgate approve --version {mv.version} --actor <manager> --reason ...`")
    return approvers


def check_not_stale(mv: ModelVersion, production: ModelVersion | None) -> None:
    """The gate compared against what production was then; if production moved since, the evidence is old."""
    judged_against = mv.tags.get(BASELINE_TAG, "")
    now = production.version if production else ""
    if judged_against != now:
        then = f"v{judged_against}" if judged_against else "no production version"
        raise Refused(f"{mv.model_name} v{mv.version} is stale: its gate compared it with {then}, production is "
                      f"now {'v' + now if now else 'unset'}. Re-gate the candidate (`modelgate gate`)")


def check_signature(release: Release, reg: Registry, mv: ModelVersion) -> dict[str, Any]:
    """The version's gate record must be signed by a release gate with a key release.yaml trusts (in its validity
    window), and the signed statement must say what the MLflow record says: the version's record (pin, file
    digests, digests: version.json or a legacy version's tags) and tags (verdict, baseline), its gate run's params,
    the sha256 of the run's report.json artifact, and release.yaml's digests when it pins that revision.
    The signature is the run's artifact signature/statement.sig (a legacy version: its tag modelgate.signature).
    Returns the verified statement. Call after check_untampered (which ties the record and tags to the params)."""
    where = f"{mv.model_name} v{mv.version}"
    tags = mv.tags
    if not release.signing_keys:
        raise Refused(f"{where}: no signing keys configured (signing.public_keys in {release.path}): no gate "
                      "record can be verified, so nothing can be promoted (`modelgate keygen`, see docs/releasing.md)")
    record = version_record(reg, mv)
    if record.gate_kind != signing.RELEASE:
        raise Refused(f"{where}: recorded by an {record.gate_kind} gate; only a release gate's record can be promoted")
    unsigned = Refused(f"{where} is unsigned: only a signed release gate (run from the protected branch, "
                       "`modelgate gate --kind release` with the signing key) can be promoted; re-gate it there")
    if not mv.run_id:
        raise unsigned
    encoded = tags.get(signing.LEGACY_SIGNATURE_TAG)
    if encoded is None:
        sig_file = reg.artifact(mv.run_id, f"{signing.SIGNATURE_DIR}/{signing.SIGNATURE_FILE}")
        if sig_file is None:
            raise unsigned
        encoded = sig_file.decode("ascii", errors="replace").strip()
    try:
        sig = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(f"{where}: its signature is not base64") from None
    raw = reg.artifact(mv.run_id, f"{signing.SIGNATURE_DIR}/{signing.STATEMENT_FILE}")
    if raw is None:
        raise Refused(f"{where}: its gate run {mv.run_id} holds no signed statement "
                      f"({signing.SIGNATURE_DIR}/{signing.STATEMENT_FILE})")
    try:
        stmt = json.loads(raw)
    except ValueError:
        stmt = None
    if not isinstance(stmt, dict):
        raise Refused(f"{where}: its signed statement is not a JSON object")
    # the tracking server's own creation time of the version dates the signature, not the signer's claim
    created = dt.datetime.fromtimestamp(mv.created_ms / 1000, dt.UTC) if mv.created_ms else None
    signing.verify(stmt, sig, release.signing_keys, where, server_time=created)
    run = reg.run(mv.run_id)
    params = run.params if run else {}
    report_bytes = reg.artifact(mv.run_id, "report.json")
    pin = record.pin
    expected: dict[str, Any] = {
        "type": signing.STATEMENT_TYPE, "gate_kind": signing.RELEASE, "model_name": release.model_name,
        "run_id": mv.run_id, "source": pin.source, "repo": pin.repo, "revision": pin.revision, "files": pin.files,
        "digests": record.digests, "verdict": tags.get(VERDICT_TAG), "exit_code": _int(params.get(EXIT_CODE_PARAM)),
        "baseline_version": tags.get(BASELINE_TAG, ""), "gate_id": params.get("gate_id"),
        "report_sha256": hashlib.sha256(report_bytes).hexdigest() if report_bytes is not None else None,
    }
    if signing.LEGACY_KEY_ID_TAG in tags:  # a legacy version's key-id tag must name the key that signed
        expected["key_id"] = tags[signing.LEGACY_KEY_ID_TAG]
    if "items_sha256" in stmt:  # the per-item results a later gate pairs with (older statements do not cover them)
        items = reg.artifact(mv.run_id, ITEMS_FILE)
        expected["items_sha256"] = hashlib.sha256(items).hexdigest() if items is not None else None
    problems = [f"{k} (signed {stmt.get(k)!r}, recorded {v!r})" for k, v in expected.items() if stmt.get(k) != v]
    if mv.source != pin.uri():
        problems.append(f"MLflow source {mv.source!r} (signed pin {pin.uri()!r})")
    pinned = release.candidate
    if stmt.get("revision") == pinned.revision and pinned.files and stmt.get("files") != pinned.files:
        problems.append(f"files: release.yaml pins other digests for revision {pinned.revision}")
    if problems:
        raise Refused(f"{where}: the signed gate statement does not match the record: {'; '.join(problems)}. "
                      "Refusing it; re-gate the candidate with the release gate")
    return stmt


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None
