"""The gate report: one versioned JSON document, the single source of truth.

The console summary, the markdown (PR comment), MLflow's params/metrics/artifacts and `modelgate report`
are all renderings of this dict. `schema_version` changes when a field changes meaning.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InfraError
from .secrets import redact

SCHEMA_VERSION = 1
REPORT_FILE = "report.json"


def save(report: dict[str, Any], run_dir: Path) -> Path:
    """Write atomically (temp file + rename), secrets redacted. Disk errors are infrastructure errors."""
    path = run_dir / REPORT_FILE
    text = redact(json.dumps(report, indent=2, sort_keys=False, default=str))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".report-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise InfraError(f"cannot write the gate report to {path}: {exc.strerror or exc}") from exc
    return path


def load(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InfraError(f"{path}: report schema_version {data.get('schema_version')!r} is not {SCHEMA_VERSION}")
    return data


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_console(report: dict[str, Any]) -> str:
    lines = [f"gate {report['gate_id']}  {report['model_name']}  {report['candidate']['uri']}"]
    for stage in report["stages"]:
        lines.append(f"  {stage['name']:<10} {stage['status']:<13} {stage['duration_s']:8.1f}s  "
                     + "; ".join(stage["reasons"][:2]))
    for stage in report["stages"]:
        tail = stage["details"].get("log_tail")
        if tail:
            lines.append(f"--- {stage['name']}: last lines of the server log ---")
            lines.extend("  | " + ln for ln in tail.splitlines())
    lines.append(f"verdict: {report['verdict'].upper()} (exit {report['exit_code']})")
    for reason in report["reasons"]:
        lines.append(f"  - {reason}")
    run_id = (report.get("tracking") or {}).get("run_id")
    lines.append(f"mlflow run: {run_id}" if run_id else "mlflow run: (not recorded)")
    lines.append(f"report: {report['run_dir']}/{REPORT_FILE}")
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    text = str(text).replace("\r", " ").replace("\n", " ")
    for ch in "\\`*_{}[]<>|#!":
        text = text.replace(ch, "\\" + ch)
    return text


def to_markdown(report: dict[str, Any]) -> str:
    icon = {"passed": "✅", "rejected": "❌", "inconclusive": "⚠️", "error": "🛑", "interrupted": "⏹"}
    cand = report["candidate"]
    out = [f"## {icon.get(report['verdict'], '')} modelgate: {report['verdict']}",
           "",
           f"**{_md_escape(report['model_name'])}** candidate `{cand['revision']}` "
           f"(served as `{report.get('served_name') or '-'}`) from `{_md_escape(cand['repo'])}`",
           ""]
    if report["reasons"]:
        out += [f"- {_md_escape(r)}" for r in report["reasons"]] + [""]
    out += ["| stage | status | duration | notes |", "|---|---|---:|---|"]
    for stage in report["stages"]:
        notes = "; ".join(_md_escape(r) for r in stage["reasons"][:3])
        out.append(f"| {stage['name']} | {stage['status']} | {stage['duration_s']:.1f}s | {notes} |")
    metrics = [(s["name"], k, v) for s in report["stages"] for k, v in s["metrics"].items()]
    if metrics:
        out += ["", "| stage | metric | value |", "|---|---|---:|"]
        out += [f"| {s} | {k} | {_fmt(v)} |" for s, k, v in metrics]
    tracking = report.get("tracking") or {}
    if tracking.get("run_id"):
        out += ["", f"MLflow run `{tracking['run_id']}` in experiment `{_md_escape(tracking.get('experiment', ''))}`"]
    return "\n".join(out) + "\n"
