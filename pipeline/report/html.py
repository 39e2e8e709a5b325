"""The gate report as one self-contained HTML page: inline CSS, plots as data: URIs, no script, no external
request (a Content-Security-Policy says so to the browser). Every value is escaped with html.escape."""

from __future__ import annotations

import base64
from collections.abc import Collection
from html import escape
from pathlib import Path
from typing import Any

from pipeline.core.verdict import Verdict
from pipeline.report import views
from pipeline.report.document import GateReport
from pipeline.report.views import COMPARISON_HEADER, baseline_line, comparison_rows, sensitivity_notes

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
COLOR = {Verdict.PASSED: "#1a7f37", Verdict.REJECTED: "#cf222e", Verdict.INCONCLUSIVE: "#9a6700",
         Verdict.ERROR: "#6e7781", Verdict.INTERRUPTED: "#6e7781"}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px}
header{color:#fff;padding:18px 24px;border-radius:8px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:0;opacity:.9}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;margin:16px 0;padding:12px 18px}
h2{font-size:16px;margin:6px 0 10px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #d8dee4;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.passed,.pass{color:#1a7f37;font-weight:600} .failed,.fail,.rejected{color:#cf222e;font-weight:600}
.inconclusive{color:#9a6700;font-weight:600} .error,.interrupted,.skipped{color:#6e7781;font-weight:600}
pre{background:#f6f8fa;border:1px solid #d8dee4;border-radius:6px;padding:8px;white-space:pre-wrap;
    word-break:break-word;margin:4px 0 12px}
img.plot{max-width:100%;border:1px solid #d8dee4;border-radius:6px} code{font-size:12px}
ul{margin:4px 0 8px 18px;padding:0}
"""


def _cell(value: Any, cls: str = "") -> str:
    text = escape(str(value))
    return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"


def _table(header: list[str], rows: list[list[str]], status_col: int | None = None,
           numeric: Collection[int] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            cls = escape(str(value)) if i == status_col else ("num" if i in numeric else "")
            cells.append(_cell(value, cls))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(title: str, inner: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{inner}</section>"


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return f"<p>{escape(alt)}: plot not available where this page was rendered.</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _replay(report: GateReport) -> str:
    line = views.replay_line(report)
    if line is None:
        return ""
    inner = f"<p>{escape(line)}</p>" + _table(views.REPLAY_HEADER, views.replay_rows(report), status_col=5,
                                               numeric=frozenset({1, 3, 4}))
    notes = views.replay_power_notes(report)
    if notes:
        inner += '<ul class="inconclusive">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"
    cases, invalid = views.replay_cases(report)
    for case in cases[:views.REPLAY_SHOWN]:
        why = "".join(f"<li><b>{escape(check)}</b>: {escape(reason)}</li>" for check, reason in case.failures)
        tag = '<span class="fail">regression</span>' if case.regressed else "failed (production failed too)"
        inner += (f"<h3><code>{escape(case.source)}</code> {tag}</h3><ul>{why}</ul>"
                  f"<p>request: {escape(case.request)}</p><p>candidate:</p><pre>{escape(case.candidate)}</pre>"
                  f"<p>production:</p><pre>{escape(case.production)}</pre>")
    if invalid:
        inner += "<p>Invalid lines skipped:</p><ul>" + "".join(f"<li>{escape(i)}</li>" for i in invalid) + "</ul>"
    return _section("Replay of production traffic", inner)


def render(report: GateReport, *, report_path: Path | None = None, mlflow_ui: str | None = None,
           details_url: str | None = None) -> str:
    """One self-contained page with the plots inline; `report_path` finds the plot beside a moved report."""
    verdict = report.verdict
    cand = report.candidate
    facts = [f"candidate {cand.revision} from {cand.repo}", f"served as {report.served_name or '-'}",
             f"gate {report.gate_id}", f"{report.started_at[:19].replace('T', ' ')} UTC"]
    if report.pr:
        facts.append(f"PR #{report.pr}")
    parts = [f'<header style="background:{COLOR.get(verdict, "#6e7781")}"><h1>modelgate: '
             f"{escape(views.headline(report))}</h1><p>{escape(' · '.join(facts))}</p></header>"]
    if report.reasons:
        why = "".join(f"<li>{escape(str(r))}</li>" for r in report.reasons)
        parts.append(_section("Why", f"<ul>{why}</ul>"))
    stage_rows = [[s.name, s.status.value, f"{round(s.duration_s, 3):.1f}s", "; ".join(s.reasons[:4])]
                  for s in report.stages]
    parts.append(_section("Stages", _table(["stage", "status", "time", "notes"], stage_rows, status_col=1,
                                           numeric={2})))
    rows = comparison_rows(report)
    if rows:
        line = baseline_line(report)
        parts.append(_section("Quality against production", (f"<p>{escape(line)}</p>" if line else "") +
                              _table(COMPARISON_HEADER, rows, status_col=views.VERDICT_COLUMN,
                                     numeric=frozenset({2, 3, 4, 9})) +
                              "".join(f"<p>{escape(note)}</p>" for note in sensitivity_notes(report))))
    cases, total = views.failing_cases(report)
    if cases:
        items = []
        for case in cases:
            why = "".join(f"<li><b>{escape(exp)}</b>: {escape(reason)}"
                          + (f" <code>at {escape(str(path))}</code>" if path else "")
                          + "</li>" for exp, reason, path in case.failures)
            crit = ' <span class="fail">critical</span>' if case.critical else ""
            items.append(f"<h3><code>{escape(case.key)}</code>{crit}</h3><ul>{why}</ul>"
                         f"<pre>{escape(case.output)}</pre>")
        of = f" of {total}" if total else ""
        parts.append(_section(f"Failing prompt cases ({len(cases)}{of})", "".join(items)))
    replay = _replay(report)
    if replay:
        parts.append(replay)
    for title, text in views.evidence(report):
        parts.append(_section(title, f"<pre>{escape(text)}</pre>"))
    load = views.load_rows(report)
    if load:
        summary = "<ul>" + "".join(f"<li>{escape(s)}</li>" for s in views.load_summary(report)) + "</ul>"
        parts.append(_section("Load test", _table(views.LOAD_HEADER, load, numeric=views.LOAD_NUMERIC) + summary +
                              _img(views.plot_file(report, report_path), "latency and goodput versus load")))
    if report.environment:
        env = report.environment.to_dict()
        parts.append(_section("Environment", _table(["component", "version"], [[k, v] for k, v in env.items()])))
    links = views.mlflow_links(report, mlflow_ui)
    if details_url:
        links["workflow run"] = details_url
    tracking = report.tracking
    record = f"MLflow run {tracking.run_id} in {tracking.experiment}" if tracking.run_id else "not recorded in MLflow"
    link_html = " · ".join(f'<a href="{escape(url)}">{escape(name)}</a>' for name, url in links.items()
                           if url.startswith(("https://", "http://")))
    parts.append(_section("Record", f"<p>{escape(record)}</p>" + (f"<p>{link_html}</p>" if link_html else "")))
    title = escape(f"modelgate {verdict}: {report.model_name} {cand.revision[:12]}")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title>'
            f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>\n")
