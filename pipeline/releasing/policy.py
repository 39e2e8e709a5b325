"""The release policy: who may act, and what a model version must show before it becomes production.

Every check here reads and refuses; nothing is written. Refusals are `Refused` (exit 5) with the reason,
bad arguments (unknown version or alias) are `BadInput` (exit 2).
"""

from __future__ import annotations

import json

from pipeline.config.release import Release
from pipeline.errors import BadInput, Refused
from pipeline.gate.verdict import VERDICTS, Verdict
from pipeline.integrations.registry import ModelVersion, Registry
from pipeline.integrations.tracking import EXIT_CODE_PARAM, VERDICT_PARAM, param_key
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
