"""Stage: replay recorded production traffic (gates.replay) against the candidate, paired with production.

A deterministic sample of the recorded requests (config/traffic.py) is sent to the candidate's staging server
(the same boot as every stage) exactly as production's clients sent it. Each answer is judged by the checks its
request implies (checks/replay.py). Production's answer to the same request is the recorded one when it came
from the current production version (its served name), or the one production's own release gate recorded (its
items.json, signed with the gate: every gate records its answers there, by request hash, scrubbed); otherwise
production is asked in this gate: at its own server when gates.replay.production_endpoint names one that serves
production's served name, else its pin is fetched and served on staging (the report says which, and why).
Every check is a paired 0/1 metric `replay/<check>` judged like the other gates' (stats.compare_metric: exact
McNemar non-inferiority, margin and floor from gates.replay); no production version yet: absolute floors only.
The requests where production passed and the candidate failed come first.

Privacy: every value util/pii.py finds in the sampled requests and answers is registered as a secret (redacted
from every file of the run directory, the report and its renderings), and every excerpt kept is scrubbed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from pipeline.checks.replay import Outcome, check_length, judge
from pipeline.checks.replay_power import CheckPower, ReplayCheck, check_power
from pipeline.checks.stats import MetricComparison, absolute_only, compare_metric
from pipeline.config.release import REPLAY_CHECKS, Pin
from pipeline.config.traffic import Answer, Recorded, Traffic, load_traffic, sample
from pipeline.core.decision import Decision, deciding_first, fold
from pipeline.core.result import StageResult, Status
from pipeline.core.rundir import RunDir
from pipeline.gate.context import GateContext
from pipeline.gate.stages.compare import write_table
from pipeline.model.fetch import fetch
from pipeline.report.results import ReplayProduction
from pipeline.serving.chat import ChatRequest, run_chats
from pipeline.serving.vllm_server import Endpoint, VllmServer
from pipeline.util import pii
from pipeline.util.progress import Progress, progress_for
from pipeline.util.secrets import register_secret_value

NAME = "replay"
METRIC_PREFIX = "replay/"
EXCERPT_CHARS = 400
SHOWN = 20  # requests kept in the report's details (regressions first); all in the replay.jsonl artifact
INVALID_SHOWN = 10


def protect(texts: list[str]) -> None:
    """Register every email, phone, card number and secret in `texts` as a secret value (util/secrets.py)."""
    for text in texts:
        for value in pii.found(text):
            register_secret_value(value)


def strings(value: Any) -> list[str]:
    """Every string in a JSON value (keys too)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def answer_record(answer: Answer) -> dict[str, Any]:
    """An answer as items.json keeps it for a later gate to pair with: scrubbed like every excerpt."""
    return {"text": pii.scrub(answer.text), "finish_reason": answer.finish_reason,
            "tool_calls": [[name, pii.scrub(args)] for name, args in answer.tool_calls],
            "error": pii.scrub(answer.error) if answer.error else None}


def answer_from_record(doc: dict[str, Any], served_name: str) -> Answer:
    return Answer(str(doc.get("text") or ""), tuple((str(n), str(a)) for n, a in doc.get("tool_calls") or []),
                  doc.get("finish_reason"), doc.get("error"), served_name)


def answer_text(answer: Answer | None) -> str:
    """An answer as shown: its text and its tool calls as name(arguments); scrubbed, cut."""
    if answer is None:
        return ""
    if answer.error:
        return pii.scrub(f"[error] {answer.error}")[:EXCERPT_CHARS]
    calls = "".join(f"\n[tool call] {name}({args})" for name, args in answer.tool_calls)
    return pii.scrub(answer.text + calls)[:EXCERPT_CHARS]


def ask(endpoint: Endpoint, records: list[Recorded], *, concurrency: int, progress: Progress,
        check_alive: Any = None) -> dict[str, Answer]:
    requests = [ChatRequest(r.key, list(r.messages), dict(r.params)) for r in records]
    responses = run_chats(endpoint.base_url, endpoint.served_name, requests, concurrency=concurrency,
                          timeout_s=endpoint.request_timeout_s, progress=progress, check_alive=check_alive,
                          api_key=endpoint.api_key)
    return {resp.key: Answer(resp.text, resp.tool_calls, resp.finish_reason, resp.error, endpoint.served_name)
            for resp in responses}


def ask_production(ctx: GateContext, pin: Pin, records: list[Recorded], progress: Progress) -> dict[str, Answer]:
    """Fetch and serve production's pin (as compare.reevaluate does) and ask it `records`."""
    release = ctx.release
    model_dir = fetch(pin, release.repo_location(pin), ctx.home, file=f"{release.path} (production, replay)",
                      allowlist=release.remote_code_allowlist, progress=progress)
    files = RunDir(ctx.files.baseline.stage(NAME))
    files.path.mkdir(parents=True, exist_ok=True)
    server = VllmServer(model_dir.path, release.served_name(pin), release.serving, files.server_log,
                        enforce_eager=ctx.enforce_eager, progress=progress, api_key=ctx.api_key)
    with server as endpoint:
        return ask(endpoint, records, concurrency=release.replay_gate.concurrency, progress=progress,
                   check_alive=server.check_alive)


def endpoint_problem(endpoint: Endpoint) -> str | None:
    """None when the endpoint lists `endpoint.served_name` in /v1/models; else why it cannot stand in for it."""
    import httpx

    try:
        models = httpx.get(f"{endpoint.base_url}/v1/models", headers=endpoint.headers(), timeout=10)
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    if not 200 <= models.status_code < 300:
        return f"/v1/models answered HTTP {models.status_code}"
    try:
        served = [str(m["id"]) for m in models.json().get("data", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "/v1/models did not answer a model list"
    return None if endpoint.served_name in served else f"it serves {', '.join(served) or 'nothing'}"


def ask_where_production_serves(ctx: GateContext, pin: Pin, served: str, records: list[Recorded],
                                progress: Progress) -> tuple[dict[str, Answer], str, str]:
    """Production's answers to `records` (what its record does not answer): from its own server when
    gates.replay.production_endpoint names one serving `served`, else from its pin booted on staging.
    (answers, where they came from, why there)."""
    cfg = ctx.release.replay_gate.production_endpoint
    if cfg is None:
        return ask_production(ctx, pin, records, progress), "staging", "no gates.replay.production_endpoint"
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    register_secret_value(key)
    endpoint = Endpoint.external(cfg.url, served, key, ctx.release.serving.request_timeout_s)
    problem = endpoint_problem(endpoint)
    if problem is None:
        progress(f"asking production's own server {endpoint.base_url} ({served})")
        answers = ask(endpoint, records, concurrency=ctx.release.replay_gate.concurrency, progress=progress)
        return answers, "endpoint", f"gates.replay.production_endpoint {endpoint.base_url} serves {served}"
    why = f"gates.replay.production_endpoint {endpoint.base_url}: {problem}, not {served}" \
        if problem.startswith("it serves") else f"gates.replay.production_endpoint {endpoint.base_url}: {problem}"
    progress(f"{why}: booting production on staging instead")
    return ask_production(ctx, pin, records, progress), "staging", why


def production_answers(ctx: GateContext, records: list[Recorded], candidate: dict[str, Answer],
                       progress: Progress) -> tuple[dict[str, Answer], dict[str, str], dict[str, Any] | None]:
    """(answers by key, where each came from: recorded | asked, production's description); no production
    version: ({}, {}, None). Production at the candidate's own revision and files is not booted again: the
    candidate's answers are its answers (same bytes, same serving settings)."""
    store = ctx.baseline_store
    baseline = store.production(ctx.release.model_name) if store else None
    if baseline is None:
        progress("no production version yet: absolute floors only")
        return {}, {}, None
    served = ctx.release.served_name(baseline.pin)
    answers = {r.key: r.response for r in records if r.response is not None and r.response.served_name == served}
    origin = dict.fromkeys(answers, "recorded")
    # what production's own release gate answered (its items.json, signed and verified with the baseline)
    gated = {r.key: answer_from_record(baseline.replay_answers[r.key], served) for r in records
             if r.key not in answers and r.key in baseline.replay_answers}
    answers.update(gated)
    origin.update(dict.fromkeys(gated, "production's gate"))
    missing = [r for r in records if r.key not in answers]
    progress(f"production v{baseline.version} ({served}): {len(answers) - len(gated)} recorded answer(s) by it in "
             f"the traffic, {len(gated)} by its own gate"
             + (f", asking it the other {len(missing)} in this gate" if missing else ": no boot of production"))
    same = baseline.pin.revision == ctx.release.candidate.revision and baseline.pin.files == ctx.release.candidate.files
    asked_at, why = "record", "production's records answer every sampled request"
    if missing and same:
        progress("production is the candidate's own revision: its answers are the candidate's")
        asked = {r.key: candidate[r.key] for r in missing}
        asked_at, why = "candidate", "production is the candidate's own revision and files"
        answers.update(asked)
        origin.update(dict.fromkeys(asked, "asked"))
    elif missing:
        asked, asked_at, why = ask_where_production_serves(ctx, baseline.pin, served, missing, progress)
        answers.update(asked)
        origin.update(dict.fromkeys(asked, "asked"))
    info = ReplayProduction(baseline.version, baseline.pin.revision, served,
                            recorded=sum(1 for v in origin.values() if v == "recorded"),
                            from_gate=sum(1 for v in origin.values() if v == "production's gate"),
                            asked=sum(1 for v in origin.values() if v == "asked"), asked_at=asked_at,
                            why=why).to_dict()
    return answers, origin, info


def judge_all(records: list[Recorded], cand: dict[str, Answer], prod: dict[str, Answer], lo: float, hi: float
              ) -> list[dict[str, Any]]:
    """Per request: each check's outcome for the candidate and production (None: no production answer)."""
    rows = []
    for rec in records:
        c_out = judge(rec, cand[rec.key])
        p_ans = prod.get(rec.key)
        p_out: dict[str, Outcome] | None = judge(rec, p_ans) if p_ans is not None else None
        if p_ans is not None and not p_ans.error and not cand[rec.key].error:
            c_out["length"] = check_length(cand[rec.key], p_ans, lo, hi)
            if p_out is not None:
                p_out["length"] = Outcome(True)  # production is the yardstick of its own length
        checks = {name: {"candidate": out.passed, "candidate_reason": out.reason,
                         "production": None if p_out is None else p_out[name].passed,
                         "production_reason": None if p_out is None else p_out[name].reason}
                  for name, out in c_out.items()}
        regressed = [n for n, v in checks.items() if v["production"] and not v["candidate"]]
        rows.append({"key": rec.key, "source": rec.source, "tags": rec.tags, "request": rec.excerpt(),
                     "checks": checks, "regressed": regressed,
                     "failed": [n for n, v in checks.items() if not v["candidate"]],
                     "candidate": answer_text(cand[rec.key]), "production": answer_text(p_ans)})
    rows.sort(key=lambda r: (not r["regressed"], not r["failed"]))  # regressions, then other failures
    return rows


def comparisons(rows: list[dict[str, Any]], ctx: GateContext, paired: bool
                ) -> list[tuple[MetricComparison, CheckPower]]:
    """Per check: its metric comparison and its power (production's own pass rate, checks/replay_power.py)."""
    cfg = ctx.release.replay_gate
    out = []
    for check in REPLAY_CHECKS:
        have = [r["checks"][check] for r in rows if check in r["checks"]]
        if paired:
            have = [v for v in have if v["production"] is not None]
        if not have:
            continue
        limit = cfg.threshold(check)
        cand = [1.0 if v["candidate"] else 0.0 for v in have]
        name = METRIC_PREFIX + check
        base = [1.0 if v["production"] else 0.0 for v in have] if paired else None
        comparison = compare_metric(name, cand, base, limit.margin, limit.floor, "binary", alpha=ctx.release.alpha) \
            if base is not None else absolute_only(name, cand, limit.floor, "binary")
        out.append((comparison, check_power(check, comparison, base, ctx.release.alpha)))
    return out


def tables(judged: list[tuple[MetricComparison, CheckPower]]
           ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The stage's metric rows (the compare table's, with each check's power flag) and its per-check summary
    (rates side by side, production's own passes, the MDE, the flag): what the report's renderings read."""
    table = [dataclasses.replace(c, power_flag=p.flag).to_dict() for c, p in judged]
    per_check = {p.check: ReplayCheck.of(c, p).to_dict() for c, p in judged}
    return table, per_check


def traffic_line(traffic: Traffic, sampled: int, not_chat: int = 0) -> str:
    extra = [f"{not_chat} trace(s) without a chat-completion span"] if not_chat else []
    extra += [f"{traffic.duplicates} duplicate(s) removed"] if traffic.duplicates else []
    extra += [f"{len(traffic.invalid)} invalid line(s) skipped"] if traffic.invalid else []
    return f"{sampled} sampled of {len(traffic.records)} recorded requests" + (f" ({', '.join(extra)})"
                                                                               if extra else "")


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(ctx: GateContext) -> StageResult:
    cfg = ctx.release.replay_gate
    if not cfg.enabled:
        return StageResult(NAME, Status.SKIPPED, reasons=["not configured or disabled (gates.replay)"])
    progress = progress_for(NAME)
    release = ctx.release
    if ctx.replay_traffic is not None:  # production's traces, read by the gate before any boot
        traffic, not_chat = ctx.replay_traffic
    else:
        traffic = load_traffic(release.root / (cfg.path or ""), skip_invalid=cfg.skip_invalid,
                               file=str(release.path),
                               batch_output=release.root / cfg.batch_output if cfg.batch_output else None)
        not_chat = 0
    chosen = sample(traffic.records, cfg.size, cfg.seed, cfg.strata)
    protect([text for r in chosen for text in strings(r.body())]
            + [t for r in chosen if r.response for t in (r.response.text, *(a for _, a in r.response.tool_calls))])
    line = traffic_line(traffic, len(chosen), not_chat)
    progress(line)
    cand = ask(ctx.endpoint, chosen, concurrency=cfg.concurrency, progress=progress,
               check_alive=ctx.server.check_alive if ctx.server else None)
    ctx.replay_answers = {key: answer_record(answer) for key, answer in cand.items()}  # recorded with the items
    prod, origin, production = production_answers(ctx, chosen, cand, progress)
    rows = judge_all(chosen, cand, prod, cfg.length_min, cfg.length_max)
    for row in rows:
        row["production_from"] = origin.get(row["key"])
    judged = comparisons(rows, ctx, paired=production is not None)
    results = [c for c, _ in judged]
    table, per_check = tables(judged)
    out_dir = ctx.files.stage(NAME)
    status = fold(c.verdict for c in results)
    regressions = [r for r in rows if r["regressed"]]
    reasons = [line + (f"; {len(regressions)} request(s) production passed and the candidate failed"
                       if production is not None else "")]
    # the failing checks first: they decide the verdict
    reasons += list(dict.fromkeys(reason for c in sorted(results, key=lambda c: deciding_first(c.verdict))
                                  for reason in c.reasons if status == Status.PASSED or c.verdict != Decision.PASS))
    reasons += [note for _, p in judged if (note := p.note())]  # a check production fails has no power
    metrics: dict[str, float] = {"sampled": len(chosen), "recorded": len(traffic.records),
                                 "invalid": len(traffic.invalid), "regressions": len(regressions)}
    for c, power in judged:
        check = power.check
        if c.candidate_mean is not None:
            metrics[f"{check}.candidate_rate"] = c.candidate_mean
        if c.baseline_mean is not None:
            metrics[f"{check}.production_rate"] = c.baseline_mean
        if power.production_passes is not None:
            metrics[f"{check}.production_passes"] = power.production_passes
            metrics[f"{check}.break_power"] = power.break_power or 0.0
            metrics[f"{check}.no_power"] = float(power.flag == "no power")
        if c.mde is not None:
            metrics[f"{check}.mde"] = c.mde
    details = {"sampled": len(chosen), "recorded": len(traffic.records), "lines": traffic.lines,
               "duplicates": traffic.duplicates, "invalid_count": len(traffic.invalid),
               "invalid": [{"source": i.source, "problem": i.problem} for i in traffic.invalid[:INVALID_SHOWN]],
               "sample": {"size": cfg.size, "seed": cfg.seed, "strata": cfg.strata},
               "production": production, "alpha": release.alpha, "per_check": per_check, "metrics": table,
               "requests": rows[:SHOWN]}
    return StageResult(NAME, status, metrics=metrics, reasons=reasons, details=details,
                       artifacts={"replay.jsonl": str(write_rows(rows, out_dir / "replay.jsonl")),
                                  "comparison.csv": str(write_table(table, out_dir / "comparison.csv"))})
