"""The gate report as markdown: the pull-request comment and report.md.

Everything that comes from the model or from files a pull request can change (outputs, reasons, names) is
untrusted: inline text is escaped so it cannot open markdown, HTML, links, images, @mentions or #references,
and model output goes in a fenced block whose fence is longer than any backtick run inside it.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.core.verdict import Verdict
from pipeline.report import views
from pipeline.report.document import GateReport
from pipeline.report.views import COMPARISON_HEADER, baseline_line, comparison_rows, sensitivity_notes

ICON = {Verdict.PASSED: "✅", Verdict.REJECTED: "❌", Verdict.INCONCLUSIVE: "⚠️", Verdict.ERROR: "🛑",
        Verdict.INTERRUPTED: "⏹️"}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
WJ = "\u2060"  # word joiner: invisible, breaks @mentions, #refs and autolinks


def inline(text: Any) -> str:
    """Untrusted text for a table cell or a line: one line, nothing interpreted."""
    s = _CONTROL.sub(" ", str(text)).replace("\r", " ").replace("\n", " ")
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = s.replace("@", "@" + WJ).replace("://", ":" + WJ + "//").replace("www.", "www" + WJ + ".")
    return s


def code_block(text: str, lang: str = "text") -> str:
    """Untrusted multi-line text, shown verbatim: the fence outgrows any backtick run in it."""
    text = _CONTROL.sub(" ", text.replace("\r", ""))
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _table(header: list[str], rows: list[list[str]], escape: bool = True) -> list[str]:
    cell = inline if escape else str
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]


def replay_section(report: GateReport) -> list[str]:
    """Replayed production traffic: per-check rates side by side, then the requests production passed and the
    candidate failed (scrubbed excerpts of the request and both answers)."""
    line = views.replay_line(report)
    if line is None:
        return []
    out = ["", "### Replay of production traffic", "", inline(line), ""]
    out += _table(views.REPLAY_HEADER, views.replay_rows(report))
    notes = views.replay_power_notes(report)  # a check production fails on most requests is never a plain pass
    out += [""] + [f"- **{inline(note)}**" for note in notes] if notes else []
    cases, invalid = views.replay_cases(report)
    for case in cases[:views.REPLAY_SHOWN]:
        why = "; ".join(f"{check}: {reason}" for check, reason in case.failures)
        tag = "**regression**" if case.regressed else "failed (production failed too)"
        out += ["", f"**{inline(case.source)}** {tag}: {inline(why)}", "", f"request: {inline(case.request)}", "",
                "candidate:", "", code_block(case.candidate), "", "production:", "", code_block(case.production)]
    if len(cases) > views.REPLAY_SHOWN:
        out += ["", f"… and {len(cases) - views.REPLAY_SHOWN} more in stages/replay/replay.jsonl."]
    if invalid:
        out += ["", "Invalid lines skipped:", ""] + [f"- {inline(i)}" for i in invalid]
    return out


def render(report: GateReport, *, mlflow_ui: str | None = None, details_url: str | None = None) -> str:
    """The PR comment / report.md; `mlflow_ui=`, `details_url=` add links."""
    cand = report.candidate
    out = [f"## {ICON.get(report.verdict, '')} modelgate: {inline(views.headline(report))}", ""]
    facts = [f"candidate `{cand.revision}` from {inline(cand.repo)}",
             f"served as {inline(report.served_name or '-')}", f"gate {inline(report.gate_id)}"]
    if report.pr:
        facts.append(f"PR \\#{WJ}{int(report.pr)}")
    out += [" · ".join(facts), ""]
    if report.sample_line:
        out += [f"**{inline(report.sample_line)}**", ""]
    if report.reasons:
        out += [f"- {inline(r)}" for r in report.reasons[:12]] + [""]

    out += ["### Stages", ""]
    out += _table(["stage", "status", "time", "notes"],
                  [[s.name, s.status.value, f"{round(s.duration_s, 3):.1f}s", "; ".join(s.reasons[:3])]
                   for s in report.stages])
    rows = comparison_rows(report)
    if rows:
        line = baseline_line(report)
        out += ["", "### Quality against production", ""] + ([inline(line), ""] if line else [])
        out += _table(COMPARISON_HEADER, rows)
        notes = sensitivity_notes(report)
        if notes:
            out += [""] + [f"- {inline(note)}" for note in notes]
    cases, total = views.failing_cases(report)
    if cases:
        of = f" of {total}" if total else ""
        out += ["", f"### Failing prompt cases ({len(cases)}{of})", ""]
        for case in cases[:15]:
            why = "; ".join(f"{exp}: {reason}" + (f" (at {path})" if path else "")
                            for exp, reason, path in case.failures)
            crit = " **critical**" if case.critical else ""
            out += [f"**{inline(case.key)}**{crit}: {inline(why)}", "", code_block(case.output), ""]
        if len(cases) > 15:
            out.append(f"… and {len(cases) - 15} more in the full report.")
    out += replay_section(report)
    for title, text in views.evidence(report):
        out += ["", f"### {inline(title)}", "", code_block(text)]
    load = views.load_rows(report)
    if load:
        out += ["", "### Load test", ""] + _table(views.LOAD_HEADER, load)
        out += [""] + [f"- {inline(line)}" for line in views.load_summary(report)]
    links = views.mlflow_links(report, mlflow_ui)
    if details_url:
        links["full report and plots"] = details_url
    tracking = report.tracking
    out += [""]
    if links:
        out.append(" · ".join(f"[{name}]({url})" for name, url in links.items()))
    elif tracking.run_id:
        out.append(f"MLflow run `{tracking.run_id}` in experiment {inline(tracking.experiment)}")
    else:
        out.append("Not recorded in MLflow" + (f": {inline(tracking.error)}" if tracking.error else "."))
    return "\n".join(out) + "\n"
