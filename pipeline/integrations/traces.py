"""Per-item results as MLflow 3 evaluation traces: one trace per prompt case and per eval item, attached to the
gate's run, with our checks' verdicts as assessments (no LLM judge: the format check and lm-eval are the
scorers). MLflow's evaluation view then lists a gate's items and compares two gate runs item by item (the same
case or item has the same inputs in every gate, which is what MLflow pairs them on).

    prompt case  name "support/order_extract_1"; inputs {"case": key}; outputs {"output", "finish_reason"};
                 attributes latency_s, finish_reason, served_name, completion_tokens, critical;
                 feedback `passed` (rationale: the failures) and one per expectation checked (json_schema,
                 regex, ...: pass/fail, the reason as rationale)
    eval item    name "support_intent/intent-000"; inputs {"task", "item", "doc_hash"}; outputs the scores;
                 feedback one per gated metric (acc, exact_match, ...) with the item's score

Everything comes from what the run directory already holds (items.json, format/cases.jsonl,
evals/items.jsonl), so `modelgate sync` logs them too. Logging is exactly once per run: the run's tag
`modelgate.traces` says "<n> traces" when done; a run found half logged has its traces deleted and logged again.

A failure here does not fail the gate: the traces are a view of artifacts the run already holds, and promotion
reads none of them. The run is tagged `modelgate.traces` = "not logged: <why>" and `modelgate sync --run-dir`
logs them later (see `ensure_traces`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core import tags as tagnames
from pipeline.core.rundir import RunDir
from pipeline.errors import InfraError
from pipeline.integrations.mlflow_errors import mlflow_errors
from pipeline.integrations.tracking import display_uri

if TYPE_CHECKING:
    from pipeline.report.document import GateReport

TRACES_TAG = tagnames.TRACES
PASS_METRIC = "format/pass"
SOURCE = "modelgate"


@dataclass(frozen=True)
class ItemTrace:
    """One item as MLflow shows it: a root span and its assessments (name, value, rationale)."""

    name: str
    kind: str  # format | evals
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)
    duration_ms: int = 0
    feedback: tuple[tuple[str, bool | float, str | None], ...] = ()


def _jsonl(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _stage_file(report: GateReport, run_dir: Path, stage: str, name: str) -> Path | None:
    """A stage's file as the report names it, re-rooted when the run directory moved since."""
    result = report.stage(stage)
    recorded = result.artifacts.get(name) if result else None
    if not recorded:
        return None
    path = Path(recorded)
    if not path.exists() and report.run_dir and path.is_relative_to(report.run_dir):
        path = run_dir / path.relative_to(report.run_dir)
    return path if path.exists() else None


def case_trace(key: str, passed: bool, row: dict[str, Any] | None, served_name: str | None) -> ItemTrace:
    """A prompt case's trace: its verdict and each expectation's (the row from format/cases.jsonl, if kept)."""
    row = row or {}
    failures = row.get("failures") or []
    by_expectation: dict[str, list[str]] = {}
    for f in failures:
        reason = f.get("reason") or ""
        by_expectation.setdefault(str(f.get("expectation")), []).append(
            f"{reason} (at {f['path']})" if f.get("path") else reason)
    feedback: list[tuple[str, bool | float, str | None]] = [
        ("passed", passed, "; ".join(r for rs in by_expectation.values() for r in rs) or "every expectation met")]
    for name in row.get("expectations") or []:  # rows written since expectations were listed: the met ones too
        if name not in by_expectation:
            feedback.append((name, True, "met"))
    feedback += [(name, False, "; ".join(reasons)) for name, reasons in by_expectation.items()]
    attributes = {k: row[k] for k in ("suite", "finish_reason", "latency_s", "completion_tokens", "critical")
                  if row.get(k) is not None}
    attributes["served_name"] = served_name or ""
    return ItemTrace(name=key, kind="format", inputs={"case": key},
                     outputs={"output": row.get("output", ""), "finish_reason": row.get("finish_reason")},
                     attributes=attributes, duration_ms=int(float(row.get("latency_s") or 0) * 1000),
                     feedback=tuple(feedback))


def item_traces(report: GateReport, run_dir: Path) -> list[ItemTrace]:
    """Every prompt case and eval item of a gate, from its run directory (items.json and the stage files)."""
    files = RunDir(run_dir)
    if not files.items.is_file():
        return []
    items: dict[str, dict[str, float]] = json.loads(files.items.read_text(encoding="utf-8"))["items"]
    rows = {r.get("key"): r for r in _jsonl(_stage_file(report, run_dir, "format", "cases.jsonl"))}
    out = [case_trace(key, value >= 1.0, rows.get(key), report.served_name)
           for key, value in items.get(PASS_METRIC, {}).items()]
    evals = {(r.get("task"), r.get("doc_hash")): r for r in _jsonl(_stage_file(report, run_dir, "evals",
                                                                               "items.jsonl"))}
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for name, values in items.items():
        if name == PASS_METRIC or "/" not in name:
            continue
        task, metric = name.split("/", 1)
        for doc_hash, value in values.items():
            scores.setdefault((task, doc_hash), {})[metric] = value
    for (task, doc_hash), metrics in scores.items():
        row = evals.get((task, doc_hash), {})
        item = str(row.get("item_id") or f"doc {row['doc_id']}" if row else doc_hash[:12])
        out.append(ItemTrace(name=f"{task}/{item}", kind="evals",
                             inputs={"task": task, "item": item, "doc_hash": doc_hash},
                             outputs=dict(sorted(metrics.items())),
                             attributes={"task": task, "doc_id": row.get("doc_id"), "served_name":
                                         report.served_name or ""},
                             feedback=tuple((m, v, None) for m, v in sorted(metrics.items()))))
    return out


def _start_ms(report: GateReport) -> int:
    try:
        return int(dt.datetime.fromisoformat(report.started_at).timestamp() * 1000)
    except (TypeError, ValueError):
        return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def log_traces(uri: str, experiment_id: str, run_id: str, gate_id: str, traces: list[ItemTrace],
               start_ms: int) -> int:
    """Log `traces` attached to run `run_id` (trace metadata mlflow.sourceRun); returns how many the store holds
    afterwards. MLflow exports traces asynchronously and only warns when one is lost: the count is checked."""
    import mlflow
    from mlflow.entities import AssessmentSource, Feedback
    from mlflow.tracing.constant import TraceMetadataKey
    from mlflow.tracing.trace_manager import InMemoryTraceManager

    mlflow.set_tracking_uri(uri)
    manager = InMemoryTraceManager.get_instance()
    sources = {"format": AssessmentSource(source_type="CODE", source_id=f"{SOURCE} format check"),
               "evals": AssessmentSource(source_type="CODE", source_id=f"{SOURCE} lm-eval")}
    for i, item in enumerate(traces):
        begin_ns = (start_ms + i) * 1_000_000
        span = mlflow.start_span_no_context(
            item.name, span_type="LLM" if item.kind == "format" else "EVALUATOR", inputs=item.inputs,
            attributes=item.attributes, experiment_id=experiment_id,
            metadata={TraceMetadataKey.SOURCE_RUN: run_id},
            tags={tagnames.KIND: item.kind, tagnames.GATE_ID: gate_id}, start_time_ns=begin_ns)
        # the assessments travel with the trace (one write per trace, not one per assessment)
        with manager.get_trace(span.trace_id) as live:
            if live is not None:
                live.info.assessments.extend(
                    Feedback(name=name, value=value, rationale=rationale, source=sources[item.kind],
                             trace_id=span.trace_id)
                    for name, value, rationale in item.feedback)
        span.end(outputs=item.outputs, end_time_ns=begin_ns + max(item.duration_ms, 1) * 1_000_000)
    mlflow.flush_trace_async_logging(terminate=False)
    return len(run_trace_ids(uri, experiment_id, run_id))


def run_trace_ids(uri: str, experiment_id: str, run_id: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids: list[str] = []
    token = None
    while True:
        page = client.search_traces(locations=[experiment_id], run_id=run_id, max_results=500,
                                    include_spans=False, page_token=token)
        ids += [t.info.trace_id for t in page]
        token = page.token
        if not token:
            return ids


def ensure_traces(uri: str, report: GateReport, run_dir: Path) -> str:
    """Log the gate's per-item traces to its recorded run unless they are there already; returns a note for the
    progress line. Never raises for the store's faults: the run is tagged `modelgate.traces` = "not logged: ...".
    """
    from mlflow.tracking import MlflowClient

    run_id, experiment_id = report.tracking.run_id, report.tracking.experiment_id
    if not run_id or not experiment_id:
        return "no recorded run: per-item traces not logged"
    client = MlflowClient(tracking_uri=uri)
    try:
        with mlflow_errors(f"MLflow at {display_uri(uri)}: logging per-item traces failed"):
            done = client.get_run(run_id).data.tags.get(TRACES_TAG, "")
            if done.endswith(" traces"):
                return f"per-item traces already logged ({done})"
            traces = item_traces(report, run_dir)
            stale = run_trace_ids(uri, experiment_id, run_id)  # a logging broken off half way: start over
            if stale:
                client.delete_traces(experiment_id, trace_ids=stale)
            client.set_tag(run_id, TRACES_TAG, "logging")
            held = log_traces(uri, experiment_id, run_id, report.gate_id, traces, _start_ms(report))
            if held != len(traces):
                raise InfraError(f"MLflow at {display_uri(uri)} holds {held} of the {len(traces)} per-item traces")
            client.set_tag(run_id, TRACES_TAG, f"{held} traces")
            return f"{held} per-item traces logged"
    except (InfraError, ValueError, KeyError, TypeError) as exc:  # the store's fault, or an unreadable stage file
        why = exc.one_line() if isinstance(exc, InfraError) else f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        note = f"not logged: {why}"[:500]
        try:
            client.set_tag(run_id, TRACES_TAG, note)
        except Exception:  # noqa: BLE001 - the store is failing already; the note goes to the progress line
            pass
        return f"per-item traces {note} (run `modelgate sync --run-dir {run_dir}` to log them)"
