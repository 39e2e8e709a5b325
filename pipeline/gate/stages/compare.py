"""Stage: compare the candidate with the production baseline, per metric, on the same items.

- No production version yet (first release): absolute floors only, and the report says so.
- Baseline judged on the same suites and evalsets (same digests): its recorded per-item results are paired
  with the candidate's, item by item.
- Suites or evalsets changed since: the production pin is fetched, served and evaluated in this gate on
  the same items, so the comparison is never stale.
Per metric: non-inferiority (stats.compare_metric) with the margin and floor from release.yaml, by the
metric's kind (stats.infer_kind: 0/1 items -> exact McNemar, scores -> paired bootstrap), with its sensitivity:
the smallest drop detected with 80% power at this n and alpha, and a margin below it flagged "underpowered".
A NaN or infinite per-item value is bad input (the evalset's metric must score every output; evals.py).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.checks.stats import absolute_only, compare_metric, first_non_finite, infer_kind
from pipeline.config.release import Pin, Threshold
from pipeline.core.decision import Decision, fold
from pipeline.core.result import StageResult, Status
from pipeline.errors import BadInput
from pipeline.gate.context import GateContext
from pipeline.gate.stages import evals
from pipeline.gate.stages import format as formatcheck
from pipeline.model.fetch import fetch
from pipeline.report.results import CompareBaseline
from pipeline.serving.vllm_server import VllmServer
from pipeline.util.progress import Progress, progress_for

NAME = "compare"


def thresholds(ctx: GateContext) -> dict[str, Threshold]:
    out: dict[str, Threshold] = {}
    if formatcheck.PASS_METRIC in ctx.items:
        out[formatcheck.PASS_METRIC] = ctx.release.format_gate.pass_rate
    for name in ctx.items:
        if name != formatcheck.PASS_METRIC:
            out[name] = ctx.release.evals_gate.metrics.get(name, Threshold())
    return out


# what each recorded digest covers: a changed one makes those metrics' recorded baseline items stale
FORMAT_DIGESTS = ("suites", "request_profile")
EVALS_DIGESTS = ("evalsets",)
NOT_RECORDED = " (not recorded for the baseline)"


def stale_metrics(names: Iterable[str], stale: Iterable[str], recorded: Iterable[str]) -> set[str]:
    """The metrics among `names` whose baseline items must be measured again: not `recorded` for the baseline, or
    covered by a `stale` digest (a digest this code does not know makes every metric stale)."""
    names, recorded = set(names), set(recorded)
    digests = {k for k in stale if not k.endswith(NOT_RECORDED)}
    redo = names - recorded
    if digests - {*FORMAT_DIGESTS, *EVALS_DIGESTS}:
        return names
    if digests & set(FORMAT_DIGESTS):
        redo |= names & {formatcheck.PASS_METRIC}
    if digests & set(EVALS_DIGESTS):
        redo |= names - {formatcheck.PASS_METRIC}
    return redo


def reevaluate(ctx: GateContext, pin: Pin, progress: Progress,
               metrics: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Fetch, serve and evaluate the baseline pin on the candidate's suites and/or evalsets (one boot): the
    prompt suites when `metrics` (default: every metric of the candidate) holds format/pass, lm-eval when it
    holds an eval metric."""
    wanted = set(ctx.items if metrics is None else metrics)
    release = ctx.release
    model_dir = fetch(pin, release.repo_location(pin), ctx.home, file=f"{release.path} (production baseline)",
                      allowlist=release.remote_code_allowlist, progress=progress)
    files = ctx.files.baseline
    server = VllmServer(model_dir.path, release.served_name(pin), release.serving, files.server_log,
                        enforce_eager=ctx.enforce_eager, progress=progress, api_key=ctx.api_key)
    items: dict[str, dict[str, float]] = {}
    with server as endpoint:
        if formatcheck.PASS_METRIC in wanted:
            outcome = formatcheck.evaluate(endpoint, formatcheck.suites_for(ctx),
                                           concurrency=release.format_gate.concurrency,
                                           out_dir=files.stage(formatcheck.NAME), progress=progress,
                                           check_alive=server.check_alive, profile=release.serving.request_profile)
            items[formatcheck.PASS_METRIC] = outcome.items
        eval_metrics = [n for n in ctx.items if n != formatcheck.PASS_METRIC and n in wanted]
        if eval_metrics:
            run = evals.evaluate(endpoint, model_dir.path, release.evals_gate, release.root,
                                 files.stage(evals.NAME), progress, check_alive=server.check_alive)
            items.update(evals.item_values(run, eval_metrics, who="the production baseline",
                                           include_path=release.root / release.evals_gate.include_path))
    return items


def run(ctx: GateContext) -> StageResult:
    progress = progress_for(NAME)
    if not ctx.items:
        return StageResult(NAME, Status.SKIPPED, reasons=["no quality metrics to compare"])
    limits = thresholds(ctx)
    alpha = ctx.release.alpha
    baseline = ctx.baseline_store.production(ctx.release.model_name) if ctx.baseline_store else None
    details: dict[str, Any] = {"alpha": alpha}
    if baseline is None:
        progress("no production version yet: absolute floors only")
        details["baseline"] = None
        for name in limits:
            check_finite(name, ctx.items[name], "the candidate")
        comparisons = [absolute_only(name, list(ctx.items[name].values()), limits[name].floor,
                                     infer_kind(name, list(ctx.items[name].values()))) for name in limits]
    else:
        stale: dict[str, tuple[str | None, str] | None] = {
            k: (baseline.digests.get(k), v) for k, v in ctx.digests.items() if baseline.digests.get(k) != v}
        stale.update({f"{n}{NOT_RECORDED}": None for n in ctx.items if n not in baseline.items})
        redo = stale_metrics(limits, stale, baseline.items) if stale else set()
        details["baseline"] = CompareBaseline(baseline.version, baseline.run_id, baseline.pin.revision,
                                              reevaluated=bool(stale), changed=sorted(stale),
                                              reevaluated_metrics=sorted(redo),
                                              verified=baseline.verified or None).to_dict()
        if baseline.verified:
            progress(f"production v{baseline.version}'s baseline: {baseline.verified}")
        if stale:
            kept = sorted(set(limits) - redo)
            progress(f"{', '.join(sorted(stale))} changed since production v{baseline.version} was gated: "
                     f"re-evaluating {baseline.pin.short} on the same items for {', '.join(sorted(redo))}"
                     + (f" (recorded items still valid for {', '.join(kept)})" if kept else ""))
            base_items = {**{n: v for n, v in baseline.items.items() if n not in redo},
                          **reevaluate(ctx, baseline.pin, progress, redo)}
        else:
            progress(f"pairing with production v{baseline.version} ({baseline.pin.short}) recorded in run "
                     f"{baseline.run_id}")
            base_items = baseline.items
        comparisons = []
        for name, limit in limits.items():
            cand, base = ctx.items[name], base_items.get(name, {})
            check_finite(name, cand, "the candidate")
            check_finite(name, base, f"the production baseline v{baseline.version}")
            keys = sorted(set(cand) & set(base))
            if len(keys) < len(cand):
                details.setdefault("unpaired", {})[name] = len(cand) - len(keys)
            c_vals, b_vals = [cand[k] for k in keys], [base[k] for k in keys]
            comparisons.append(compare_metric(name, c_vals, b_vals, limit.margin, limit.floor,
                                              infer_kind(name, c_vals, b_vals), alpha=alpha))
    rows = [c.to_dict() for c in comparisons]
    details["metrics"] = rows
    table = write_table(rows, ctx.files.stage(NAME) / "comparison.csv")
    status = fold(c.verdict for c in comparisons)
    reasons = [reason for c in comparisons for reason in c.reasons
               if status == Status.PASSED or c.verdict != Decision.PASS]
    reasons = list(dict.fromkeys(reasons))  # the no-baseline note once, not per metric
    metrics: dict[str, float] = {}
    for c in comparisons:
        key = c.name.replace("/", ".")
        for field in ("candidate_mean", "baseline_mean", "delta", "lower", "upper", "mde"):
            value = getattr(c, field)
            if value is not None:
                metrics[f"{key}.{field}"] = value
    return StageResult(NAME, status, metrics=metrics, reasons=reasons, details=details,
                       artifacts={"comparison.csv": str(table)})


# the first twelve as before the sensitivity was stated; new columns only at the end
TABLE_COLUMNS = ("name", "baseline_mean", "candidate_mean", "delta", "lower", "upper", "margin", "floor", "n",
                 "verdict", "method", "p_value", "kind", "mde", "underpowered", "items_needed", "discordance",
                 "sd_diff")


def check_finite(name: str, values: dict[str, float], who: str) -> None:
    """BadInput naming the metric and item when a per-item value is NaN or infinite (see evals.item_values)."""
    bad = first_non_finite(values)
    if bad is not None:
        raise BadInput(f"per-item value {bad[1]} of {who} for item {bad[0]}: a metric must score every output "
                       "with a finite number (fix the metric function)", path=name)


def write_table(rows: list[dict[str, Any]], path: Path) -> Path:
    """The per-metric comparison as CSV: the table artifact of the MLflow run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
