"""Stage: compare the candidate with the production baseline, per metric, on the same items.

- No production version yet (first release): absolute floors only, and the report says so.
- Baseline judged on the same suites and evalsets (same digests): its recorded per-item results are paired
  with the candidate's, item by item.
- Suites or evalsets changed since: the production pin is fetched, served and evaluated in this gate on
  the same items, so the comparison is never stale.
Per metric: non-inferiority (stats.compare_metric) with the margin and floor from release.yaml.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.checks.stats import absolute_only, compare_metric
from pipeline.config.release import Pin, Threshold
from pipeline.gate.context import GateContext
from pipeline.gate.result import StageResult, Status
from pipeline.gate.stages import evals
from pipeline.gate.stages import format as formatcheck
from pipeline.model.fetch import fetch
from pipeline.serving.vllm_server import VllmServer
from pipeline.util.progress import progress_for


def thresholds(ctx: GateContext) -> dict[str, Threshold]:
    out = {}
    if formatcheck.PASS_METRIC in ctx.items:
        out[formatcheck.PASS_METRIC] = ctx.release.format_gate.pass_rate
    for name in ctx.items:
        if name != formatcheck.PASS_METRIC:
            out[name] = ctx.release.evals_gate.metrics.get(name, Threshold())
    return out


def reevaluate(ctx: GateContext, pin: Pin, say) -> dict[str, dict[str, float]]:
    """Fetch, serve and evaluate the baseline pin on the candidate's suites and evalsets (one boot)."""
    release = ctx.release
    model_dir = fetch(pin, release.repo_location(pin), ctx.home, file=f"{release.path} (production baseline)",
                      allowlist=release.remote_code_allowlist, progress=say)
    out_dir = ctx.run_dir / "baseline"
    server = VllmServer(model_dir.path, release.served_name(pin), release.serving, out_dir / "server.log",
                        enforce_eager=ctx.enforce_eager, progress=say, api_key=ctx.api_key)
    items: dict[str, dict[str, float]] = {}
    with server as endpoint:
        if formatcheck.PASS_METRIC in ctx.items:
            cfg = release.format_gate
            outcome = formatcheck.evaluate(endpoint.base_url, endpoint.served_name, formatcheck.suites_for(ctx),
                                           concurrency=cfg.concurrency, timeout_s=release.serving.request_timeout_s,
                                           out_dir=out_dir / "format", say=say, check_alive=server.check_alive,
                                           api_key=endpoint.api_key)
            items[formatcheck.PASS_METRIC] = outcome.items
        eval_metrics = [n for n in ctx.items if n != formatcheck.PASS_METRIC]
        if eval_metrics:
            run = evals.evaluate(endpoint.base_url, endpoint.served_name, model_dir.path, release.evals_gate,
                                 release.root, out_dir / "evals", say, api_key=endpoint.api_key,
                                 timeout_s=release.serving.request_timeout_s)
            items.update(evals.item_values(run, eval_metrics))
    return items


def run(ctx: GateContext) -> StageResult:
    say = progress_for("compare")
    if not ctx.items:
        return StageResult("compare", Status.SKIPPED, reasons=["no quality metrics to compare"])
    limits = thresholds(ctx)
    alpha = ctx.release.alpha
    baseline = ctx.baseline_store.production(ctx.release.model_name) if ctx.baseline_store else None
    details: dict = {"alpha": alpha}
    if baseline is None:
        say("no production version yet: absolute floors only")
        details["baseline"] = None
        comparisons = [absolute_only(name, list(ctx.items[name].values()), limits[name].floor) for name in limits]
    else:
        stale = {k: (baseline.digests.get(k), v) for k, v in ctx.digests.items() if baseline.digests.get(k) != v}
        stale.update({f"{n} (not recorded for the baseline)": None for n in ctx.items if n not in baseline.items})
        details["baseline"] = {"version": baseline.version, "run_id": baseline.run_id,
                               "revision": baseline.pin.revision, "reevaluated": bool(stale),
                               "changed": sorted(stale)}
        if stale:
            say(f"{', '.join(sorted(stale))} changed since production v{baseline.version} was gated: "
                f"re-evaluating {baseline.pin.short} on the same items")
            base_items = reevaluate(ctx, baseline.pin, say)
        else:
            say(f"pairing with production v{baseline.version} ({baseline.pin.short}) recorded in run {baseline.run_id}")
            base_items = baseline.items
        comparisons = []
        for name, limit in limits.items():
            cand, base = ctx.items[name], base_items.get(name, {})
            keys = sorted(set(cand) & set(base))
            if len(keys) < len(cand):
                details.setdefault("unpaired", {})[name] = len(cand) - len(keys)
            comparisons.append(compare_metric(name, [cand[k] for k in keys], [base[k] for k in keys],
                                              limit.margin, limit.floor, "binary", alpha=alpha))
    rows = [c.to_dict() for c in comparisons]
    details["metrics"] = rows
    table = write_table(rows, ctx.run_dir / "compare" / "comparison.csv")
    verdicts = {c.verdict for c in comparisons}
    status = Status.FAILED if "fail" in verdicts else Status.INCONCLUSIVE if "inconclusive" in verdicts \
        else Status.PASSED
    reasons = [reason for c in comparisons for reason in c.reasons
               if status == Status.PASSED or c.verdict != "pass"]
    reasons = list(dict.fromkeys(reasons))  # the no-baseline note once, not per metric
    metrics = {}
    for c in comparisons:
        key = c.name.replace("/", ".")
        for field in ("candidate_mean", "baseline_mean", "delta", "lower", "upper"):
            value = getattr(c, field)
            if value is not None:
                metrics[f"{key}.{field}"] = value
    return StageResult("compare", status, metrics=metrics, reasons=reasons, details=details,
                       artifacts={"comparison.csv": str(table)})


TABLE_COLUMNS = ("name", "baseline_mean", "candidate_mean", "delta", "lower", "upper", "margin", "floor", "n",
                 "verdict", "method", "p_value")


def write_table(rows: list[dict], path: Path) -> Path:
    """The per-metric comparison as CSV: the table artifact of the MLflow run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
