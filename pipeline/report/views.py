"""Views of the gate report that every rendering shares (console, markdown PR comment, HTML page).

Each view reads the GateReport only, so the renderings cannot disagree; they differ in escaping and layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.checks import goodput, slo
from pipeline.checks.replay_power import CheckPower, ReplayCheck
from pipeline.checks.stats import MetricComparison
from pipeline.core.decision import Decision
from pipeline.report.document import GateReport
from pipeline.report.load import LoadLevel, LoadResults
from pipeline.report.results import CompareBaseline, ReplayProduction

OUTPUT_LINES = 6  # first lines of a failing case's output shown
OUTPUT_CHARS = 600
LOAD_HEADER = ["level", "load", "TTFT p50/p95/p99 ms", "e2e p50/p95/p99 ms", "output tok/s", "req/s",
               "goodput req/s", "failed", "queue max", "KV cache max"]
LOAD_NUMERIC = frozenset({4, 5, 6})  # the load table's numeric columns
COMPARISON_HEADER = ["metric", "kind", "baseline", "candidate", "delta", "interval", "margin", "MDE 80%", "floor",
                     "n", "verdict"]
VERDICT_COLUMN = COMPARISON_HEADER.index("verdict")


@dataclass(frozen=True)
class FailingCase:
    """A failing prompt case as shown: its key, whether it is critical, the first lines of its output and
    each failed expectation as (expectation, reason, path)."""

    key: str
    critical: bool
    output: str
    failures: list[tuple[str, str, str | None]]


def headline(report: GateReport) -> str:
    version = report.tracking.model_version
    return f"{report.verdict.upper()}: {report.model_name}" + (f" v{version}" if version else "") + \
        f" (exit {report.exit_code})"


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def metric_comparisons(report: GateReport) -> list[MetricComparison]:
    """Every stage's metric rows (compare's, replay's), typed."""
    rows: list[MetricComparison] = []
    for stage in report.stages:
        metrics = stage.details.get("metrics")
        rows += [MetricComparison.from_dict(m) for m in metrics] if isinstance(metrics, list) else []
    return rows


def _mde(m: MetricComparison) -> str:
    """The smallest drop detected with 80% power; marked when the margin is below it (reports before the
    sensitivity was stated have no `mde`: '-')."""
    if m.mde is None:
        return "-"
    return f"{m.mde:.3f}" + (" underpowered" if m.underpowered else "")


def comparison_rows(report: GateReport) -> list[list[str]]:
    """The per-metric table: metric, kind, baseline, candidate, delta, interval, margin, MDE, floor, n, verdict."""
    rows = []
    for m in metric_comparisons(report):
        interval = "-" if m.lower is None or m.upper is None else f"[{m.lower:+.3f}, {m.upper:+.3f}]"
        rows.append([m.name, m.kind or "-", _num(m.baseline_mean), _num(m.candidate_mean),
                     _num(m.delta, True), interval, "-" if m.margin is None else f"{m.margin:g}", _mde(m),
                     "-" if m.floor is None else f"{m.floor:g}", str(m.n), _verdict(m.verdict, m.power_flag)])
    return rows


def _verdict(verdict: str, flag: str | None) -> str:
    """A verdict with its power flag: a replay check production fails is never shown as a plain pass."""
    return f"{verdict}, {flag}" if flag else str(verdict)


def sensitivity_notes(report: GateReport) -> list[str]:
    """One line per metric whose margin is below what the gate can detect, and how each MDE was computed."""
    notes = []
    comparisons = metric_comparisons(report)
    for m in comparisons:
        if m.mde is None:
            continue
        spread = f"discordance {m.discordance:.3g}" if m.discordance is not None else \
            f"sd of differences {m.sd_diff:.3g}" if m.sd_diff is not None else "observed spread"
        if m.underpowered and m.verdict != Decision.FAIL:  # a rejected metric was not missed
            needed = f"; about {m.items_needed} paired items would resolve it" if m.items_needed else ""
            notes.append(f"{m.name}: UNDERPOWERED: margin {m.margin or 0:g} is below the smallest drop this gate "
                         f"detects with {m.power:.0%} power ({m.mde:.3f} at n={m.n}, alpha "
                         f"{m.alpha:g}, {spread}): the gate could have missed drops up to "
                         f"{m.mde:.3f}{needed}")
    if notes or any(m.mde is not None for m in comparisons):
        notes.append("MDE 80%: the smallest true drop detected with 80% power at this n and alpha, from the observed "
                     "discordance (binary: exact McNemar power) or sd of per-item differences (continuous)")
    return notes


def baseline_line(report: GateReport) -> str | None:
    """What the comparison was made against, in one line (None: no comparison ran)."""
    for stage in report.stages:
        if stage.name == "compare" and "baseline" in stage.details:
            base = stage.details["baseline"]
            if base is None:
                return "baseline: none (first release): absolute floors only"
            metrics = stage.details.get("metrics") or []
            return CompareBaseline.from_dict(base).line({MetricComparison.from_dict(m).name for m in metrics})
    return None


def failing_cases(report: GateReport) -> tuple[list[FailingCase], int | None]:
    """The format stage's failing cases, and the number of cases run."""
    fmt = report.stage("format")
    if not fmt:
        return [], None
    out = []
    for case in fmt.details.get("failing_cases", []):
        text = str(case.get("output") or "")
        lines = text.splitlines()[:OUTPUT_LINES]
        shown = "\n".join(lines)[:OUTPUT_CHARS]
        cut = shown != text
        out.append(FailingCase(key=case.get("key", "?"), critical=bool(case.get("critical")),
                               output=shown + ("\n…" if cut else ""),
                               failures=[(f.get("expectation", "?"), str(f.get("reason", "")), f.get("path"))
                                         for f in case.get("failures", [])]))
    total = fmt.metrics.get("cases")
    return out, int(total) if isinstance(total, (int, float)) else None


def _triple(values: tuple[float | None, ...]) -> str:
    return " / ".join("-" if v is None else f"{v:.0f}" for v in values)


def _load_results(report: GateReport) -> LoadResults:
    stage = report.stage("load")
    return LoadResults.from_details(stage.details) if stage is not None else LoadResults()


def _load_row(r: LoadLevel, name: str, load: str) -> list[str]:
    kv = r.max_kv_cache_usage
    return [name, load, _triple(r.ttft_ms), _triple(r.e2el_ms), f"{r.output_throughput:.1f}",
            f"{r.request_throughput:.2f}",
            "-" if r.goodput is None else f"{r.goodput:.2f} ({100 * r.good_fraction:.0f}%)",
            f"{r.failed} of {r.num_prompts}",
            "-" if r.max_waiting is None else f"{r.max_waiting:.0f}",
            "-" if kv is None else f"{100 * kv:.1f}%"]


def load_rows(report: GateReport) -> list[list[str]]:
    """The load table: concurrency levels (load = concurrent requests), request-rate levels (load = the offered
    rate) and the knee search's steps, each with its goodput (requests/s within every SLO, % of the requests)."""
    res = _load_results(report)
    rows = [_load_row(r, r.level, str(r.concurrency)) for r in res.levels]
    rows += [_load_row(r, r.level, f"{r.request_rate or 0:g} req/s") for r in res.rate_levels]
    if res.knee is not None:
        rows += [_load_row(r, f"knee {r.level} " + ("within SLO" if r.within_slo else "misses SLO"),
                           f"{r.request_rate or 0:g} req/s") for r in res.knee.steps]
    return rows


def goodput_line(limits: dict[str, float]) -> str:
    """What a good request is, in words: "goodput: requests with TTFT <= 500 ms and e2e latency <= 5000 ms"."""
    names = {"ttft": "TTFT", "tpot": "TPOT", "e2el": "e2e latency"}
    parts = [f"{names.get(k, k)} <= {v:g} ms" for k, v in limits.items()]
    return "goodput: completed requests with " + (" and ".join(parts) if parts else "no latency SLO (all of them)")


def load_summary(report: GateReport) -> list[str]:
    load = report.stage("load")
    res = _load_results(report)
    if not load or not res.measured:
        return []
    d = load.details
    lines = []
    if res.levels:
        lines.append(f"degradation curve: {res.curve_shape or '?'}")
    if "goodput_limits_ms" in d:
        lines.append(goodput_line(res.goodput_limits_ms))
    if res.rate_levels:
        lines.append(f"request-rate levels: Poisson arrivals (burstiness {res.burstiness:g}), open loop")
    if res.knee is not None:
        lines.append("knee: " + goodput.knee_line(res.knee.to_dict()))
    base = d.get("baseline") or {}
    why = f" ({base['reason']})" if base.get("reason") else ""
    lines.append(f"baseline comparison: {base.get('status', '?')}{why}")
    lines += [f"  {line}" for line in base.get("differences", [])]
    lines += slo.comparison_lines([dict(r.row) for r in (*res.levels, *res.rate_levels)], base)
    if base.get("knee"):
        lines.append(goodput.knee_comparison_line(base["knee"], base.get("version")))
    if res.cost_per_1m_output_tokens is not None:
        how = " (goodput-limited)" if "goodput_limits_ms" in d else ""
        lines.append(f"cost: ${res.cost_per_1m_output_tokens:.3f} per 1M output tokens{how} at "
                     f"${res.price_per_hour or 0:g}/h")
    return lines


def plot_file(report: GateReport, report_path: Path | None = None) -> Path | None:
    """The load test's latency plot, where the report says it is or beside the report (a downloaded run dir)."""
    load = report.stage("load")
    if not load:
        return None
    for name, path in load.artifacts.items():
        if not name.endswith(".png"):
            continue
        candidates = [Path(path)]
        if report_path is not None:  # the run dir the report is in first, then where the gate wrote it
            candidates[:0] = [report_path.parent / "load" / name, report_path.parent / "stages" / "load" / name]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
    return None


def mlflow_links(report: GateReport, ui_url: str | None = None) -> dict[str, str]:
    """Links into the MLflow UI when its address is known (MODELGATE_MLFLOW_UI_URL)."""
    ui = (ui_url or os.environ.get("MODELGATE_MLFLOW_UI_URL") or "").rstrip("/")
    tracking = report.tracking
    run_id, exp_id = tracking.run_id, tracking.experiment_id
    if not ui or not run_id or not exp_id:
        return {}
    run = f"{ui}/#/experiments/{exp_id}/runs/{run_id}"
    links = {"MLflow run": run}
    load = report.stage("load")
    if plot_file(report) is not None or (load is not None and load.artifacts):
        links["load plot"] = f"{run}/artifacts/stages/load/latency_vs_concurrency.png"
    if tracking.model_version:
        links["model version"] = f"{ui}/#/models/{report.model_name}/versions/{tracking.model_version}"
    return links


EVIDENCE_LOG_LINES = 25  # last lines of a server log shown in the markdown/HTML report
# a stage's server log tails (details key, title): the candidate's, and production's when the serve stage booted
# it for a differential check
LOG_TAILS = (("log_tail", "last lines of the server log"),
             ("production_log_tail", "last lines of the production server log (differential check)"))


def evidence(report: GateReport) -> list[tuple[str, str]]:
    """(title, verbatim text) blocks that explain a non-pass: the smoke probe's answers when it refused or noted
    something, and the server log's last lines of every stage that failed or errored with one (also production's,
    when the serve stage booted it for a differential check)."""
    out: list[tuple[str, str]] = []
    for stage in report.stages:
        probe = stage.details.get("probe")
        if isinstance(probe, dict) and (probe.get("refusals") or probe.get("notes")):
            lines = [f"prompt: {probe.get('prompt', '')!r} (max_tokens {probe.get('max_tokens', '?')})",
                     f"chat ({probe.get('finish_reason')}): {probe.get('chat_text', '')!r}",
                     f"stream ({probe.get('stream_finish_reason')}): {probe.get('stream_text', '')!r}"]
            lines += [f"HTTP {r.get('status')} to the {r.get('request')} request: {r.get('message')}"
                      for r in probe.get("refusals") or []]
            lines += [f"note: {n}" for n in probe.get("notes") or []]
            out.append((f"{stage.name}: smoke probe answers", "\n".join(lines)))
        if stage.status.value not in ("failed", "error"):
            continue
        for key, title in LOG_TAILS:
            tail = stage.details.get(key)
            if tail:
                text = "\n".join(str(tail).splitlines()[-EVIDENCE_LOG_LINES:])
                out.append((f"{stage.name}: {title}", text))
    return out


def _value(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if name.endswith(("/pass", "pass_rate")) else f"{value:.2f}"


def decision_line(report: GateReport, limit: int = 3) -> str:
    """The verdict and what decided it, on one line (the first line of the model version's description in
    MLflow): "REJECTED · format/pass 4.5% vs 75.0% (production v1) · support_intent/acc 0.17 vs 0.58".
    The metrics that failed come first; without a comparison (first gate, no baseline) the gate's reasons."""
    rows = sorted(metric_comparisons(report), key=lambda m: m.verdict == Decision.PASS)[:limit]
    parts = [str(report.verdict).upper()]
    for i, m in enumerate(rows):
        base = f" (production v{report.baseline_version})" if i == 0 and report.baseline_version else ""
        parts.append(f"{m.name} {_value(m.name, m.candidate_mean)} vs {_value(m.name, m.baseline_mean)}{base}")
    if not rows:
        parts += [" ".join(str(r).split())[:160] for r in report.reasons[:2]]
    return " · ".join(parts)


REPLAY_HEADER = ["check", "n", "production passes", "candidate", "MDE 80%", "verdict"]
REPLAY_SHOWN = 10  # requests shown in the markdown and HTML reports (all in stages/replay/replay.jsonl)


@dataclass(frozen=True)
class ReplayCase:
    """A replayed request as shown: where it was recorded, whether production passed what the candidate failed
    (a regression), each failed check as (check, the candidate's reason), and scrubbed excerpts."""

    key: str
    source: str
    regressed: list[str]
    failures: list[tuple[str, str]]
    request: str
    candidate: str
    production: str


def replay_line(report: GateReport) -> str | None:
    """How many requests were replayed of how many, and where production's answers came from."""
    stage = report.stage("replay")
    if not stage or "sampled" not in stage.details:
        return None
    d = stage.details
    line = f"replay: {d['sampled']} sampled of {d['recorded']} recorded requests"
    extra = [f"{d['duplicates']} duplicate(s) removed"] if d.get("duplicates") else []
    extra += [f"{d['invalid_count']} invalid line(s) skipped"] if d.get("invalid_count") else []
    line += f" ({', '.join(extra)})" if extra else ""
    prod = d.get("production")
    if prod is None:
        return line + "; no production version: absolute floors only"
    return f"{line}; {ReplayProduction.from_dict(prod).line()}"


def replay_checks(report: GateReport) -> list[ReplayCheck]:
    """The replay stage's checks, typed (checks/replay_power.py), in the stage's order."""
    stage = report.stage("replay")
    per_check = stage.details.get("per_check") if stage else None
    return [ReplayCheck.from_dict(name, v) for name, v in per_check.items()] if isinstance(per_check, dict) else []


def replay_powers(report: GateReport) -> list[CheckPower]:
    """Each replay check's power (checks/replay_power.py): production's own passes, the MDE, its flag."""
    return [c.power for c in replay_checks(report)]


def replay_power_notes(report: GateReport) -> list[str]:
    """One line per replay check production fails on most requests: "replay/tool_call: no power: ..."."""
    return [note for p in replay_powers(report) if (note := p.note())]


def replay_rows(report: GateReport) -> list[list[str]]:
    """Per check: items, production's passes, the candidate's pass rate, the MDE, the verdict with its power flag
    (side by side); reports before the power was stated show production's pass rate."""
    return [[c.check, str(c.power.n), c.production_shown(), "-" if c.candidate is None else f"{c.candidate:.1%}",
             "-" if c.power.mde is None else f"{c.power.mde:.3f}", _verdict(c.verdict, c.power.flag)]
            for c in replay_checks(report)]


def replay_cases(report: GateReport) -> tuple[list[ReplayCase], list[str]]:
    """The replayed requests that failed a check (regressions first, as the stage ordered them) and the
    skipped invalid lines ("file:line: problem")."""
    stage = report.stage("replay")
    if not stage:
        return [], []
    cases = []
    for r in stage.details.get("requests") or []:
        failures = [(name, str(v.get("candidate_reason") or "failed")) for name, v in (r.get("checks") or {}).items()
                    if not v.get("candidate")]
        if failures:
            cases.append(ReplayCase(key=str(r.get("key")), source=str(r.get("source")),
                                    regressed=list(r.get("regressed") or []), failures=failures,
                                    request=str(r.get("request") or ""), candidate=str(r.get("candidate") or ""),
                                    production=str(r.get("production") or "")))
    invalid = [f"{i.get('source')}: {i.get('problem')}" for i in stage.details.get("invalid") or []]
    return cases, invalid
