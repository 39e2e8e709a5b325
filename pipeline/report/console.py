"""The gate report as the console summary `modelgate gate` prints: stages, comparison, verdict, where it is."""

from __future__ import annotations

from pipeline.core.rundir import REPORT_FILE
from pipeline.report.document import GateReport
from pipeline.report.views import (
    COMPARISON_HEADER,
    LOAD_HEADER,
    LOG_TAILS,
    baseline_line,
    comparison_rows,
    load_rows,
    load_summary,
    replay_line,
    replay_power_notes,
    sensitivity_notes,
)


def render(report: GateReport) -> str:
    lines = [f"gate {report.gate_id}  {report.model_name}  {report.candidate.uri}"]
    if report.sample_line:
        lines.append(report.sample_line)
    for stage in report.stages:
        lines.append(f"  {stage.name:<10} {stage.status.value:<13} {round(stage.duration_s, 3):8.1f}s  "
                     + "; ".join(stage.reasons[:2]))
    rows = comparison_rows(report)
    if rows:
        line = baseline_line(report)
        if line:
            lines.append(line)
        lines.extend(_columns([COMPARISON_HEADER, *rows]))
        lines.extend(f"  {note}" for note in sensitivity_notes(report))
    replay = replay_line(report)
    if replay:
        lines.append(replay)
        lines.extend(f"  {note}" for note in replay_power_notes(report))
    load = load_rows(report)
    if load:
        lines.append("load test:")
        lines.extend(_columns([LOAD_HEADER, *load]))
        lines.extend(f"  {line}" for line in load_summary(report))
    for stage in report.stages:
        for key, title in LOG_TAILS:
            tail = stage.details.get(key)
            if tail:
                lines.append(f"--- {stage.name}: {title} ---")
                lines.extend("  | " + ln for ln in tail.splitlines())
    lines.append(f"verdict: {report.verdict.upper()} (exit {report.exit_code})")
    for reason in report.reasons:
        lines.append(f"  - {reason}")
    lines.append(f"report: {report.run_dir}/{REPORT_FILE}")
    if report.tracking.model_version:
        lines.append(f"model version: {report.model_name} v{report.tracking.model_version}")
    run_id = report.tracking.run_id
    lines.append(f"mlflow run: {run_id}" if run_id else "mlflow run: (not recorded)")
    return "\n".join(lines)


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned text lines (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
