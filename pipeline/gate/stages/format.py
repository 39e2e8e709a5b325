"""Stage 3: the prompt suites (prompts/*.yaml) against the staging server, outputs checked for format.

Every case is sent as a chat completion (bounded concurrency); each result keeps the output, latency,
finish reason and which expectation failed and why. A failed critical case rejects the candidate here;
pass rates are compared with the baseline in the `compare` stage (item by item: `suite/case_id`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.checks.expectations import check_case
from pipeline.config.request_profile import RequestProfile
from pipeline.config.suite import PromptCase, Suite, load_suites, suites_digest
from pipeline.core.result import StageResult, Status
from pipeline.gate.context import GateContext
from pipeline.serving.chat import ChatRequest, run_chats
from pipeline.serving.vllm_server import Endpoint
from pipeline.util.progress import Progress, progress_for

NAME = "format"
OUTPUT_KEEP_CHARS = 2000
PASS_METRIC = "format/pass"  # the per-case pass/fail item values, compared with the baseline


@dataclass(frozen=True)
class FormatOutcome:
    items: dict[str, float]  # "suite/case_id" -> 1.0 passed / 0.0 failed
    cases: list[dict[str, Any]]
    pass_rate: float
    per_suite: dict[str, float]
    critical_failed: list[str]
    cases_file: Path


def expectation_names(case: PromptCase) -> list[str]:
    """The expectations a case is checked against (named as a failure names them: json_schema, regex, ...)."""
    e = case.expect
    named = {"json_schema": e.json_schema is not None, "regex": e.regex is not None,
             "max_chars": e.max_chars is not None, "contains": bool(e.contains),
             "not_contains": bool(e.not_contains), "refuses": e.refuses is not None}
    return [name for name, present in named.items() if present]


def suites_for(ctx: GateContext) -> list[Suite]:
    return load_suites(ctx.release.root / ctx.release.format_gate.prompts_dir)


def sample_suites(suites: list[Suite], n: int | None, seed: str) -> list[Suite]:
    """`n` cases over all suites, the same for the same seed (the candidate's revision); all when n is None or
    not smaller. Suites keep their order and their cases' order; a suite left without cases is dropped."""
    import dataclasses
    import random

    keys = [(suite.name, case.id) for suite in suites for case in suite.cases]
    if n is None or n >= len(keys):
        return suites
    chosen = set(random.Random(seed).sample(keys, n))
    out = [dataclasses.replace(suite, cases=tuple(c for c in suite.cases if (suite.name, c.id) in chosen))
           for suite in suites]
    return [suite for suite in out if suite.cases]


def evaluate(endpoint: Endpoint, suites: list[Suite], *, concurrency: int, out_dir: Path, progress: Progress,
             check_alive: Callable[[], None] | None = None,
             profile: RequestProfile | None = None) -> FormatOutcome:
    """Every case of `suites` against `endpoint`, its request parameters as production's clients send them
    (`profile`, serving.request_profile); cases.jsonl in `out_dir` (each row with the parameters sent)."""
    profile = profile or RequestProfile()
    cases = [(suite, case) for suite in suites for case in suite.cases]
    requests = [ChatRequest(f"{suite.name}/{case.id}", case.messages_payload(),
                            profile.apply(case.sampling.to_request()))
                for suite, case in cases]
    progress(f"{len(requests)} case(s) from {len(suites)} suite(s), concurrency {concurrency}")
    responses = run_chats(endpoint.base_url, endpoint.served_name, requests, concurrency=concurrency,
                          timeout_s=endpoint.request_timeout_s, progress=progress, check_alive=check_alive,
                          api_key=endpoint.api_key)
    rows: list[dict[str, Any]] = []
    items: dict[str, float] = {}
    critical_failed: list[str] = []
    for (suite, case), request, resp in zip(cases, requests, responses, strict=True):
        if resp.error:
            verdict = {"case_id": case.id, "passed": False, "critical": case.critical,
                       "failures": [{"expectation": "request", "reason": resp.error, "path": None}]}
        else:
            verdict = check_case(case, resp.text, resp.finish_reason).to_dict()
        items[resp.key] = 1.0 if verdict["passed"] else 0.0
        if case.critical and not verdict["passed"]:
            critical_failed.append(resp.key)
        rows.append({"key": resp.key, "suite": suite.name, **verdict, "expectations": expectation_names(case),
                     "output": resp.text[:OUTPUT_KEEP_CHARS],
                     "finish_reason": resp.finish_reason, "latency_s": round(resp.latency_s, 4),
                     "completion_tokens": resp.completion_tokens, "request_params": request.params})
    out_dir.mkdir(parents=True, exist_ok=True)
    cases_file = out_dir / "cases.jsonl"
    cases_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    per_suite: dict[str, float] = {}
    for suite in suites:
        values = [items[f"{suite.name}/{c.id}"] for c in suite.cases]
        per_suite[suite.name] = sum(values) / len(values) if values else 0.0
    rate = sum(items.values()) / len(items) if items else 0.0
    return FormatOutcome(items, rows, rate, per_suite, critical_failed, cases_file)


def run(ctx: GateContext) -> StageResult:
    cfg = ctx.release.format_gate
    if not cfg.enabled:
        return StageResult(NAME, Status.SKIPPED, reasons=["not configured or disabled (gates.format)"])
    all_suites = suites_for(ctx)
    if not all_suites:
        return StageResult(NAME, Status.SKIPPED, reasons=[f"no suites in {cfg.prompts_dir}/"])
    suites = sample_suites(all_suites, ctx.case_sample, ctx.release.candidate.revision)
    profile = ctx.release.serving.request_profile
    progress = progress_for(NAME)
    if profile.configured:
        progress(f"request profile: clients set {sorted(profile.set) or 'nothing'}; left to the server's defaults: "
                 f"{list(profile.server_default) or 'nothing'}")
    outcome = evaluate(ctx.endpoint, suites, concurrency=cfg.concurrency, out_dir=ctx.files.stage(NAME),
                       progress=progress, check_alive=ctx.server.check_alive if ctx.server else None,
                       profile=profile)
    ctx.items[PASS_METRIC] = outcome.items
    ctx.digests["suites"] = suites_digest(all_suites)  # a sample pairs with the baseline's items of the same suites
    if profile.configured:  # results under other request parameters are not paired with these
        ctx.digests["request_profile"] = profile.digest()
    passed = int(sum(outcome.items.values()))
    reasons = [f"{passed}/{len(outcome.items)} cases passed ({outcome.pass_rate:.1%})"]
    status = Status.PASSED
    if outcome.critical_failed:
        status = Status.FAILED
        reasons.insert(0, f"critical case(s) failed: {', '.join(outcome.critical_failed)}")
    failing = [{"key": r["key"], "critical": r["critical"], "output": r["output"][:300],
                "failures": r["failures"]} for r in outcome.cases if not r["passed"]]
    metrics: dict[str, float] = {"pass_rate": outcome.pass_rate, "cases": len(outcome.items),
               "critical_failed": len(outcome.critical_failed),
               **{f"pass_rate.{name}": rate for name, rate in outcome.per_suite.items()}}
    return StageResult(NAME, status, metrics=metrics, reasons=reasons,
                       artifacts={"cases.jsonl": str(outcome.cases_file)},
                       details={"suites_digest": ctx.digests["suites"], "per_suite": outcome.per_suite,
                                "cases_total": sum(len(s.cases) for s in all_suites),
                                "failing_cases": failing, "request_profile": profile.to_dict()})
