"""The release policy: who may act, and what a model version must show before it becomes production.

Every check here reads and refuses; nothing is written. Refusals are `Refused` (exit 5) with the reason,
bad arguments (unknown version or alias) are `BadInput` (exit 2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from pipeline.config.release import Release
from pipeline.errors import BadInput, Refused
from pipeline.gate.verdict import VERDICTS, Verdict
from pipeline.integrations.registry import ModelVersion, Registry
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


def check_untampered(reg: Registry, mv: ModelVersion) -> dict:
    """The version's tags must still say what its gate run recorded (run params cannot be edited in MLflow).
    Returns the gate run's params."""
    where = f"{mv.model_name} v{mv.version}"
    tags = mv.tags
    if "modelgate.gate_run_id" not in tags or not mv.run_id:
        raise Refused(f"{where} was not registered by a modelgate gate (no gate run): it cannot be released")
    if tags["modelgate.gate_run_id"] != mv.run_id:
        raise Refused(f"{where}: tag modelgate.gate_run_id {tags['modelgate.gate_run_id']} does not match the "
                      f"version's run {mv.run_id}: the version tags were changed after the gate")
    run = reg.run(mv.run_id)
    if run is None:
        raise Refused(f"{where}: its gate run {mv.run_id} no longer exists in MLflow")
    if not run.active:
        raise Refused(f"{where}: its gate run {mv.run_id} was deleted in MLflow: the evidence is gone, it cannot "
                      "be released (restore the run, or re-gate the candidate)")
    params, run_tags = run.params, run.tags
    problems = []
    for key in ("revision", "repo", "source"):
        if tags.get(f"modelgate.{key}") != params.get(key):
            problems.append(f"{key} {tags.get(f'modelgate.{key}')!r} (gate recorded {params.get(key)!r})")
    try:
        files = json.loads(tags.get("modelgate.files", ""))
    except ValueError:
        files = None
    recorded = {k.removeprefix("file_sha256."): v for k, v in params.items() if k.startswith("file_sha256.")}
    if not isinstance(files, dict) or {param_key(k): v for k, v in files.items()} != recorded:
        changed = sorted(set(recorded) ^ set(files or {}) |
                         {k for k, v in (files or {}).items() if recorded.get(param_key(k)) != v})
        problems.append(f"file digests ({', '.join(changed) or 'unreadable'})")
    verdict = tags.get("modelgate.verdict")
    # the verdict and exit code are params of the gate run (written once, immutable in MLflow); the run's tag and
    # metric of the same name can be written again by anyone with write access, so they must agree with the params.
    # A run recorded before the params existed: its exit-code metric must have been logged exactly once.
    recorded_verdict = params.get(VERDICT_PARAM, run_tags.get("modelgate.verdict"))
    if EXIT_CODE_PARAM in params:
        exit_codes = [float(params[EXIT_CODE_PARAM])]
        metric = run.metrics.get("gate.exit_code")
        if metric is not None and metric != exit_codes[0]:
            exit_codes.append(metric)
    else:
        exit_codes = reg.metric_history(mv.run_id, "gate.exit_code")
    expected_exit = VERDICTS.get(Verdict(verdict)) if verdict in set(Verdict) else None
    if verdict != recorded_verdict or run_tags.get("modelgate.verdict") != recorded_verdict \
            or len(exit_codes) != 1 or expected_exit != int(exit_codes[0]):
        shown = ", ".join(f"{c:g}" for c in exit_codes) or "none"
        problems.append(f"verdict {verdict!r} (gate run says {recorded_verdict!r}"
                        + (f", its tag {run_tags.get('modelgate.verdict')!r}"
                           if run_tags.get("modelgate.verdict") != recorded_verdict else "")
                        + f", exit code {shown})")
    if problems:
        raise Refused(f"{where}: version tags differ from what its gate run {mv.run_id} recorded: "
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


def check_approvals(release: Release, audit: AuditLog, mv: ModelVersion) -> list[str]:
    """Distinct release managers other than the author who approved this version. Refused if too few."""
    author = mv.tags.get("modelgate.author", "unknown").casefold()
    approvers: list[str] = []
    for ev in audit.approvals(release.model_name, mv.version):
        who = ev.actor.casefold()
        if release.promotion.is_manager(ev.actor) and who != author and who not in {a.casefold() for a in approvers}:
            approvers.append(ev.actor)
    need = release.promotion.approvals_required
    if len(approvers) < need:
        have = f"approved by {', '.join(approvers)}" if approvers else "no approval yet"
        raise Refused(f"{release.model_name} v{mv.version} needs {need} approval(s) by release managers other "
                      f"than its author ({mv.tags.get('modelgate.author', 'unknown')}); {have}. "
                      f"Run `modelgate approve --version {mv.version} --actor <manager> --reason ...`")
    return approvers


def check_not_stale(mv: ModelVersion, production: ModelVersion | None) -> None:
    """The gate compared against what production was then; if production moved since, the evidence is old."""
    judged_against = mv.tags.get("modelgate.baseline_version", "")
    now = production.version if production else ""
    if judged_against != now:
        then = f"v{judged_against}" if judged_against else "no production version"
        raise Refused(f"{mv.model_name} v{mv.version} is stale: its gate compared it with {then}, production is "
                      f"now {'v' + now if now else 'unset'}. Re-gate the candidate (`modelgate gate`)")


def check_signature(release: Release, reg: Registry, mv: ModelVersion) -> dict[str, Any]:
    """The version's gate record must be signed by a release gate with a key release.yaml trusts (in its validity
    window), and the signed statement must say what the MLflow record says: the version's tags, its gate run's
    params, the sha256 of the run's report.json artifact, and release.yaml's digests when it pins that revision.
    Returns the verified statement. Call after check_untampered (which ties the tags to the run's params)."""
    where = f"{mv.model_name} v{mv.version}"
    tags = mv.tags
    if not release.signing_keys:
        raise Refused(f"{where}: no signing keys configured (signing.public_keys in {release.path}): no gate "
                      "record can be verified, so nothing can be promoted (`modelgate keygen`, see README)")
    if tags.get(signing.GATE_KIND_TAG, signing.RELEASE) != signing.RELEASE:
        raise Refused(f"{where}: recorded by an {tags.get(signing.GATE_KIND_TAG)} gate; only a release gate's "
                      "record can be promoted")
    if not tags.get(signing.SIGNATURE_TAG) or not mv.run_id:
        raise Refused(f"{where} is unsigned: only a signed release gate (run from the protected branch, "
                      "`modelgate gate --kind release` with the signing key) can be promoted; re-gate it there")
    try:
        sig = base64.b64decode(tags[signing.SIGNATURE_TAG], validate=True)
    except (binascii.Error, ValueError):
        raise Refused(f"{where}: its signature tag is not base64") from None
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
    signing.verify(stmt, sig, release.signing_keys, where)
    run = reg.run(mv.run_id)
    params = run.params if run else {}
    files = tags.get("modelgate.files", "")
    try:
        tag_files = json.loads(files)
    except ValueError:
        tag_files = None
    report_bytes = reg.artifact(mv.run_id, "report.json")
    expected: dict[str, Any] = {
        "type": signing.STATEMENT_TYPE, "gate_kind": signing.RELEASE, "model_name": release.model_name,
        "run_id": mv.run_id, "key_id": tags.get(signing.KEY_ID_TAG),
        "source": tags.get("modelgate.source"), "repo": tags.get("modelgate.repo"),
        "revision": tags.get("modelgate.revision"), "files": tag_files,
        "digests": {k.removeprefix("modelgate.digest."): v for k, v in tags.items()
                    if k.startswith("modelgate.digest.")},
        "verdict": tags.get("modelgate.verdict"), "exit_code": _int(params.get(EXIT_CODE_PARAM)),
        "baseline_version": tags.get("modelgate.baseline_version", ""), "gate_id": params.get("gate_id"),
        "report_sha256": hashlib.sha256(report_bytes).hexdigest() if report_bytes is not None else None,
    }
    problems = [f"{k} (signed {stmt.get(k)!r}, recorded {v!r})" for k, v in expected.items() if stmt.get(k) != v]
    pin = release.candidate
    if stmt.get("revision") == pin.revision and pin.files and stmt.get("files") != pin.files:
        problems.append(f"files: release.yaml pins other digests for revision {pin.revision}")
    if problems:
        raise Refused(f"{where}: the signed gate statement does not match the record: {'; '.join(problems)}. "
                      "Refusing it; re-gate the candidate with the release gate")
    return stmt


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None
