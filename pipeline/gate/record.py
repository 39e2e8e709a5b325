"""`record`: a saved gate report into MLflow (one run, one model version) and, for a release gate, its signed
statement. Used by the gate when it ends (run.py) and by `modelgate sync` for reports kept while MLflow was down.

`save_report` writes report.json and its renderings (markdown, HTML) into the run directory: before MLflow is
touched, and again each time the record names more (its run, its model version).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

from pipeline.core import tags as tagnames
from pipeline.core.gatekind import ADVISORY, GATE_KIND_TAG
from pipeline.core.rundir import RunDir
from pipeline.errors import InfraError
from pipeline.integrations import registry, traces, tracking
from pipeline.releasing import signing
from pipeline.report import html, markdown, views
from pipeline.report.document import GateReport
from pipeline.util.progress import progress_for
from pipeline.util.secrets import redact

REPLAY_POWER_TAG = tagnames.REPLAY_POWER


def _artifacts(report: GateReport, run_dir: Path) -> list[tuple[Path, str | None]]:
    """What the MLflow run holds: the report, its markdown and HTML, the per-item results and each stage's files
    (the load test's plot among them: stages/load/latency_vs_concurrency.png).
    A report whose run directory was moved since still finds its stage files (paths are re-rooted)."""
    recorded_dir = report.run_dir or str(run_dir)
    files = RunDir(run_dir)
    out: list[tuple[Path, str | None]] = [(files.report, None), (files.markdown, None), (files.html, None),
                                         (files.items, None)]
    for stage in report.stages:
        for name in stage.artifacts.values():
            path = Path(name)
            if not path.exists() and path.is_relative_to(recorded_dir):
                path = run_dir / path.relative_to(recorded_dir)
            out.append((path, f"stages/{stage.name}"))
    return out


def _finished_ms(report: GateReport) -> int:
    """The metrics' timestamp: when the gate finished, so logging them again (a resumed record) is a no-op."""
    try:
        return int(dt.datetime.fromisoformat(report.finished_at).timestamp() * 1000)
    except (TypeError, ValueError):
        return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def _prompting_params(report: GateReport) -> dict[str, str]:
    """How the evals prompted each task (part of what they measured): `evals.chat_template.<task>`, and
    `evals.fewshot_as_multiturn.<task>`."""
    stage = report.stage("evals")
    prompting = (stage.details.get("prompting") if stage else None) or {}
    return {f"evals.{key}.{task}": str(value).lower() for task, mode in sorted(prompting.items())
            for key, value in (("chat_template", mode.get("apply_chat_template")),
                               ("fewshot_as_multiturn", mode.get("fewshot_as_multiturn")))}


def record(report: GateReport, run_dir: Path, uri: str, signer: signing.Signer | None = None) -> GateReport:
    """Record a saved gate report (run_dir/report.json, items.json, stage files) in MLflow: one run, one model
    version. Everything comes from the report, so `modelgate sync` calls this too, and every step is resumable:
    an existing run (report.json's tracking.run_id, else the run tagged with this gate_id) is completed rather
    than created again, and a model version already created from that run is reused. Returns the report as
    recorded (its tracking names the run and the model version; it is saved so).

    An advisory gate's run registers no model version. A release gate's record is signed with `signer` last,
    once report.json is final (its sha256 is in the statement): the statement and signature become the run's
    artifacts `signature/` and the version's tags; without a signer the version is tagged unsigned."""
    progress = progress_for("record")
    report = report.redacted()  # what the record holds (params, tags, version.json, the statement) holds no secret
    pin = report.candidate.pin()
    model_name = report.model_name
    experiment = report.tracking.experiment
    digests = report.digests
    src = report.source_control
    params: dict[str, Any] = {
        "model_name": model_name, "source": pin.source, "repo": pin.repo, "revision": pin.revision,
        "served_name": report.served_name, "gate_id": report.gate_id,
        "repo_commit": src.commit if src else None, "pr": report.pr or "",
        **{f"version.{k}": v for k, v in (report.environment.to_dict() if report.environment else {}).items()},
        **{f"file_sha256.{name}": digest for name, digest in pin.files.items()},
        **{f"digest.{name}": digest for name, digest in digests.items()},
        "author": report.author, "baseline_version": report.baseline_version or "",
        tracking.VERDICT_PARAM: str(report.verdict), tracking.EXIT_CODE_PARAM: report.exit_code,
        **_prompting_params(report),
    }
    metrics: dict[str, float] = {f"{s.name}.{k}": v for s in report.stages for k, v in s.metrics.items()
                                 if isinstance(v, (int, float))}
    metrics.update({f"{s.name}.duration_s": round(s.duration_s, 3) for s in report.stages})
    metrics["gate.exit_code"] = report.exit_code
    tags = {tagnames.KIND: "gate", tagnames.VERDICT: str(report.verdict), tagnames.REVISION: pin.revision,
            tagnames.MODEL_NAME: model_name, tagnames.GATE_ID: report.gate_id,
            tagnames.AUTHOR: report.author, "mlflow.user": report.author,  # MLflow's "Created by"
            tagnames.BASELINE_VERSION: report.baseline_version or "",
            GATE_KIND_TAG: report.gate_kind}
    power_notes = views.replay_power_notes(report)
    if power_notes:  # a replay check production fails on most requests: on the run's page, not only in its files
        tags[REPLAY_POWER_TAG] = "; ".join(power_notes)
    params["gate_kind"] = report.gate_kind
    advisory = report.gate_kind == ADVISORY
    root = Path(report.config_file or run_dir).parent
    files = RunDir(run_dir)
    current = report

    def embed(exp_id: str, run_id: str) -> None:
        nonlocal current
        current = current.with_tracking(experiment_id=exp_id, run_id=run_id)
        save_report(current, run_dir)

    def kept(exc: InfraError) -> InfraError:
        current.with_tracking(error=exc.one_line()).save(run_dir)
        return InfraError(f"{exc.one_line()}; the gate report is kept at {files.report}: run "
                          f"`modelgate sync --run-dir {run_dir}` once the tracking server is back "
                          "(a gate that is not recorded cannot be promoted)")

    artifacts = _artifacts(report, run_dir)
    if not advisory:  # the model version's full record (its own tags are few and short)
        version_file = run_dir / registry.VERSION_FILE
        doc = registry.version_document(model_name, pin, digests, report.author, report.baseline_version,
                                        report.gate_kind)
        try:
            version_file.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise InfraError(f"cannot write {version_file}: {exc.strerror or exc}") from exc
        artifacts.append((version_file, None))
    progress(f"recording gate {report.gate_id} in experiment {experiment!r}")
    try:
        _, run_id = tracking.record_run(
            uri, experiment, run_name=f"gate {report.served_name}", params=params,
            metrics=metrics, tags=tags, artifacts=artifacts,
            artifact_root=root / "mlflow" / "artifacts",
            on_run_id=embed, failed=not report.passed, run_id=report.tracking.run_id,
            gate_id=report.gate_id, timestamp_ms=_finished_ms(report))
        progress(f"recorded as MLflow run {run_id}")
        if advisory:
            current = current.with_tracking(error=None)
            save_report(current, run_dir)
            tracking.upload(uri, run_id, files.report)
            tracking.upload(uri, run_id, files.markdown)
            tracking.upload(uri, run_id, files.html)
            progress("advisory gate: no model version registered (never promotable)")
            return current
        version = registry.register_version(uri, model_name, pin, run_id, str(report.verdict),
                                            author=report.author, baseline_version=report.baseline_version,
                                            description=views.decision_line(report),
                                            about=_model_about(report.config_file))
        current = current.with_tracking(model_version=version, error=None)
        save_report(current, run_dir)
        tracking.upload(uri, run_id, files.report)  # the MLflow copy names its model version too
        tracking.upload(uri, run_id, files.markdown)
        tracking.upload(uri, run_id, files.html)
        progress(f"registered {model_name} version {version} (alias {registry.CANDIDATE!r})")
        sign_record(current, run_dir, uri, run_id, version, signer)  # last: report.json is final
    except InfraError as exc:
        raise kept(exc) from exc
    progress(traces.ensure_traces(uri, current, run_dir))  # a view of the artifacts: noted, never fatal
    return current


def sign_record(report: GateReport, run_dir: Path, uri: str, run_id: str, version: str,
                signer: signing.Signer | None) -> None:
    """Sign what the release gate judged (report.json as recorded) and attach it to the run and the version."""
    progress = progress_for("record")
    store = registry.Registry(uri)
    name = report.model_name
    if signer is None:
        existing = store.version(name, version)
        if existing is not None and existing.tags.get(signing.STATUS_TAG) == signing.SIGNED:  # resumed (sync): keep it
            return
        store.set_version_tag(name, version, signing.STATUS_TAG, signing.UNSIGNED)
        progress(f"{name} v{version} is UNSIGNED (no signing key): promote will refuse it")
        return
    files = RunDir(run_dir)
    stmt = signing.statement(report, run_id=run_id, report_sha256=signing.sha256_hex(files.report.read_bytes()),
                             key_id=signer.key_id, items_sha256=signing.sha256_hex(files.items.read_bytes()))
    sig = signer.sign(stmt)
    out = run_dir / signing.SIGNATURE_DIR
    try:
        out.mkdir(exist_ok=True)
        (out / signing.STATEMENT_FILE).write_bytes(signing.canonical(stmt))
        (out / signing.SIGNATURE_FILE).write_text(base64.b64encode(sig).decode() + "\n", encoding="ascii")
    except OSError as exc:
        raise InfraError(f"cannot write the signed statement to {out}: {exc.strerror or exc}") from exc
    tracking.upload(uri, run_id, out / signing.STATEMENT_FILE, signing.SIGNATURE_DIR)
    tracking.upload(uri, run_id, out / signing.SIGNATURE_FILE, signing.SIGNATURE_DIR)
    store.set_version_tag(name, version, signing.STATUS_TAG, signing.SIGNED)  # the signature itself is the artifact
    progress(f"signed {name} v{version} with key {signer.key_id}")


def _model_about(config_file: str | None) -> str | None:
    """release.yaml's model.description (what the model is, for the registered model's description in MLflow);
    None when it has none or the file is gone (a kept report synced from elsewhere)."""
    import yaml

    try:
        data = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) if config_file else None
    except (OSError, yaml.YAMLError):
        return None
    about = ((data or {}).get("model") or {}).get("description") if isinstance(data, dict) else None
    return str(about).strip() or None if about else None


def save_report(report: GateReport, run_dir: Path) -> None:
    """report.json and its markdown and HTML renderings, secrets redacted in all three."""
    files = RunDir(run_dir)
    report.save(run_dir)
    report = report.redacted()  # the renderings escape text: redact the fields, not only the rendered text
    for path, render in ((files.markdown, lambda: markdown.render(report)),
                         (files.html, lambda: html.render(report, report_path=files.report))):
        try:
            path.write_text(redact(render()), encoding="utf-8")
        except OSError as exc:
            raise InfraError(f"cannot write {path}: {exc.strerror or exc}") from exc

