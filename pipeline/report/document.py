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

from pipeline.errors import InfraError
from pipeline.util.secrets import redact

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


def _num(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def comparison_rows(report: dict[str, Any]) -> list[list[str]]:
    """The per-metric table: metric, baseline, candidate, delta, interval, margin, floor, n, verdict."""
    rows = []
    for stage in report["stages"]:
        for m in stage["details"].get("metrics", []) if isinstance(stage["details"].get("metrics"), list) else []:
            interval = "-" if m["lower"] is None else f"[{m['lower']:+.3f}, {m['upper']:+.3f}]"
            rows.append([m["name"], _num(m["baseline_mean"]), _num(m["candidate_mean"]), _num(m["delta"], True),
                         interval, "-" if m["margin"] is None else f"{m['margin']:g}",
                         "-" if m["floor"] is None else f"{m['floor']:g}", str(m["n"]), m["verdict"]])
    return rows


COMPARISON_HEADER = ["metric", "baseline", "candidate", "delta", "interval", "margin", "floor", "n", "verdict"]


def _baseline_line(report: dict[str, Any]) -> str | None:
    for stage in report["stages"]:
        if stage["name"] == "compare" and "baseline" in stage["details"]:
            base = stage["details"]["baseline"]
            if base is None:
                return "baseline: none (first release): absolute floors only"
            how = f"re-evaluated in this gate ({', '.join(base['changed'])} changed)" if base["reevaluated"] \
                else "paired with its recorded per-item results"
            return f"baseline: production v{base['version']} ({base['revision'][:12]}), {how}"
    return None


def to_console(report: dict[str, Any]) -> str:
    lines = [f"gate {report['gate_id']}  {report['model_name']}  {report['candidate']['uri']}"]
    for stage in report["stages"]:
        lines.append(f"  {stage['name']:<10} {stage['status']:<13} {stage['duration_s']:8.1f}s  "
                     + "; ".join(stage["reasons"][:2]))
    rows = comparison_rows(report)
    if rows:
        line = _baseline_line(report)
        if line:
            lines.append(line)
        widths = [max(len(r[i]) for r in rows + [COMPARISON_HEADER]) for i in range(len(COMPARISON_HEADER))]
        for row in [COMPARISON_HEADER] + rows:
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for stage in report["stages"]:
        tail = stage["details"].get("log_tail")
        if tail:
            lines.append(f"--- {stage['name']}: last lines of the server log ---")
            lines.extend("  | " + ln for ln in tail.splitlines())
    lines.append(f"verdict: {report['verdict'].upper()} (exit {report['exit_code']})")
    for reason in report["reasons"]:
        lines.append(f"  - {reason}")
    lines.append(f"report: {report['run_dir']}/{REPORT_FILE}")
    tracking = report.get("tracking") or {}
    if tracking.get("model_version"):
        lines.append(f"model version: {report['model_name']} v{tracking['model_version']}")
    run_id = tracking.get("run_id")
    lines.append(f"mlflow run: {run_id}" if run_id else "mlflow run: (not recorded)")
    return "\n".join(lines)


def to_markdown(report: dict[str, Any], **links: Any) -> str:
    """The PR comment / report.md (report_markdown.py); `mlflow_ui=`, `details_url=` add links."""
    from pipeline.report.markdown import render

    return render(report, **links)


def to_html(report: dict[str, Any], report_path: Path | None = None, **links: Any) -> str:
    """One self-contained page with the plots inline (report_html.py)."""
    from pipeline.report.html import render

    return render(report, report_path=report_path, **links)
