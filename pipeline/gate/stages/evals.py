"""Stage 4: domain evals with lm-evaluation-harness (evalsets/) against the staging server.

lm-eval talks to the same vLLM boot through `local-completions`; per-item results (`items.jsonl`) are kept
as an artifact because the baseline comparison pairs items by the hash of their document.

Chat models are evaluated on the path production serves them: per task (gates.evals.chat_template, default
"auto": when the model's tokenizer has a chat template), lm-eval renders each request with the model's own
chat template, as vLLM's /v1/chat/completions does, and shots become user/assistant turns. How each task was
prompted is part of the evalset digest, so a baseline evaluated the other way is re-evaluated, not paired.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipeline.config.release import EvalsGate
from pipeline.core.result import StageResult, Status
from pipeline.errors import BadInput, InfraError
from pipeline.gate.context import GateContext
from pipeline.serving.vllm_server import Endpoint
from pipeline.tools.lmeval import run as lmeval
from pipeline.tools.lmeval.evalset import ChatMode, evalset_digest, has_chat_template, task_shots
from pipeline.tools.lmeval.results import LmEvalRun
from pipeline.tools.lmeval.run import run_lmeval
from pipeline.util.progress import Progress, progress_for

NAME = "evals"


def chat_modes(cfg: EvalsGate, evalsets: Path, model_dir: Path) -> dict[str, ChatMode]:
    """task -> how lm-eval prompts it for the model in `model_dir` (its tokenizer decides "auto")."""
    template = has_chat_template(model_dir)
    modes: dict[str, ChatMode] = {}
    for task in cfg.tasks:
        setting = cfg.prompting_for(task)
        apply = template if setting.chat_template == "auto" else bool(setting.chat_template)
        shots = task_shots(evalsets, task)  # None: a tag (lm-eval applies the flag to its tasks with shots)
        modes[task] = ChatMode(apply, apply and setting.fewshot_as_multiturn and shots != 0)
    return modes


def missing_template(cfg: EvalsGate, model_dir: Path) -> list[str]:
    """Tasks configured `chat_template: true` for a model whose tokenizer has no chat template."""
    if has_chat_template(model_dir):
        return []
    return [t for t in cfg.tasks if cfg.prompting_for(t).chat_template is True]


def lmeval_args(endpoint: Endpoint, tokenizer_dir: Path, cfg: EvalsGate, root: Path) -> dict[str, Any]:
    """The arguments of lm-eval's run for `cfg` against `endpoint` (run_lmeval and lmeval.prestart take the same:
    a prestarted run is used only when its command is the one the stage would run)."""
    evalsets = root / cfg.include_path
    return {"base_url": endpoint.base_url, "model_name": endpoint.served_name, "tokenizer_dir": tokenizer_dir,
            "tasks": list(cfg.tasks), "include_path": evalsets, "num_concurrent": cfg.num_concurrent,
            "limit": cfg.limit, "api_key": endpoint.api_key, "timeout_s": endpoint.request_timeout_s,
            "modes": chat_modes(cfg, evalsets, tokenizer_dir), "loglikelihood": cfg.loglikelihood}


def evaluate(endpoint: Endpoint, tokenizer_dir: Path, cfg: EvalsGate, root: Path, out_dir: Path,
             progress: Progress, prestarted: lmeval.Prestarted | None = None,
             check_alive: Callable[[], None] | None = None) -> LmEvalRun:
    """lm-eval's tasks of `cfg` (evalsets under `root`) against `endpoint`; its files in `out_dir`.

    Each task is prompted as `chat_modes` resolves it for the model in `tokenizer_dir`; tasks prompted
    differently run as separate lm-eval invocations on the same server. `prestarted`: see `prestart`."""
    return run_lmeval(output_dir=out_dir, progress=progress, prestarted=prestarted, check_alive=check_alive,
                      **lmeval_args(endpoint, tokenizer_dir, cfg, root))


def prestart(ctx: GateContext) -> None:
    """Start the candidate's lm-eval run while the server boots (ctx.warm_up, called by the serve stage once vLLM
    is spawned), held before its first request until the stage releases it, so lm-eval's ~15 s of
    start-up is off the gate's critical path. Nothing when the stage would not run lm-eval on this endpoint; a
    failure here is left for the stage itself to meet and report."""
    cfg = ctx.release.evals_gate
    if not cfg.enabled or ctx.endpoint is None or missing_template(cfg, ctx.model_dir.path):
        return
    try:
        started = lmeval.prestart(output_dir=ctx.files.stage(NAME),
                                  **lmeval_args(ctx.endpoint, ctx.model_dir.path, cfg, ctx.release.root))
    except Exception:  # noqa: BLE001 - the stage runs lm-eval itself and reports what goes wrong, by cause
        return
    if started is not None:
        ctx.lmeval_prestart = started
        ctx.cleanup.callback(started.stop)


def item_values(run: LmEvalRun, metric_names: Iterable[str], *, who: str = "the candidate",
                include_path: Path | None = None) -> dict[str, dict[str, float]]:
    """'task/metric' -> {doc_hash: value}, for the configured metrics.

    A NaN or infinite value is bad input (exit 2), naming the task's YAML, the metric, the item and whose
    output it scored: the evalset's metric must give every possible output a finite score (an empty answer
    included). The model cannot be blamed for a metric that is undefined on its output (rejecting would judge
    the candidate by the evalset's bug, passing would hide it); the fix belongs in the evalset.
    """
    out: dict[str, dict[str, float]] = {}
    for name in metric_names:
        task, metric = name.split("/", 1)
        for item in run.items:
            value = item.get(metric)
            if item["task"] == task and isinstance(value, float) and not math.isfinite(value):
                where = str(include_path / f"{task}.yaml") if include_path else None
                raise BadInput(f"metric {metric} scored {who}'s output {value} on item "
                               f"{item.get('item_id') or item['doc_hash'][:12]} (doc_id {item['doc_id']}): a metric "
                               "must give every output a finite score (fix the metric function)", file=where,
                               path=f"metric_list.{metric}")
        out[name] = run.scores(task, metric)
    return out


def metric_names(cfg: EvalsGate, run: LmEvalRun | None = None) -> list[str]:
    """The configured metrics, or (none configured) every per-item metric lm-eval produced."""
    if cfg.metrics:
        return list(cfg.metrics)
    names: set[str] = set()
    for item in (run.items if run else []):
        names.update(f"{item['task']}/{k}" for k, v in item.items()
                     if k not in ("task", "doc_id", "doc_hash", "item_id") and isinstance(v, float))
    return sorted(names)


def run(ctx: GateContext) -> StageResult:
    cfg = ctx.release.evals_gate
    if not cfg.enabled:
        return StageResult(NAME, Status.SKIPPED, reasons=["no tasks configured (gates.evals.tasks)"])
    missing = missing_template(cfg, ctx.model_dir.path)
    if missing:  # production's chat endpoint cannot serve it either: the candidate's fault
        return StageResult(NAME, Status.FAILED, reasons=[
            f"the candidate's tokenizer has no chat template (no chat_template.jinja, no chat_template in "
            f"tokenizer_config.json), but gates.evals says chat_template: true for {', '.join(missing)}"])
    try:
        prestarted, ctx.lmeval_prestart = ctx.lmeval_prestart, None
        result = evaluate(ctx.endpoint, ctx.model_dir.path, cfg, ctx.release.root, ctx.files.stage(NAME),
                          progress_for(NAME), prestarted,
                          check_alive=ctx.server.check_alive if ctx.server is not None else None)
    except InfraError:
        if ctx.server is not None:
            ctx.server.check_alive()  # "vLLM died" (with its log tail) explains lm-eval's failure better
        raise
    if ctx.server is not None:
        ctx.server.check_alive()
    names = metric_names(cfg, result)
    missing = [n for n in names if not result.scores(*n.split("/", 1))]
    if missing:
        return StageResult(NAME, Status.ERROR,
                           reasons=[f"lm-eval produced no per-item values for {', '.join(missing)}"])
    ctx.items.update(item_values(result, names, include_path=ctx.release.root / cfg.include_path))
    modes = chat_modes(cfg, ctx.release.root / cfg.include_path, ctx.model_dir.path)
    ctx.digests["evalsets"] = evalset_digest(ctx.release.root / cfg.include_path, list(cfg.tasks), modes,
                                             cfg.loglikelihood)
    metrics: dict[str, float] = {}
    for task, scores in result.tasks.items():
        for metric, value in scores.metrics.items():
            if isinstance(value, (int, float)):
                metrics[f"{task}.{metric}"] = float(value)
    metrics.update(items=result.n_items, items_per_s=result.items_per_s, wall_time_s=result.wall_time_s)
    reasons = [f"{result.n_items} items in {result.wall_time_s:.0f}s ({result.items_per_s:.2f} items/s)"] + \
        [f"{t} ({modes[t].label if t in modes else 'raw completions'}): "
         + ", ".join(f"{k}={v:.3f}" for k, v in s.metrics.items()) for t, s in result.tasks.items()]
    artifacts = {"items.jsonl": result.items_file,
                 "lmeval_run.json": str(Path(result.items_file).with_name("lmeval_run.json"))}
    log = Path(result.items_file).with_name("lm_eval.log")
    if log.exists():
        artifacts["lm_eval.log"] = str(log)
    return StageResult(NAME, Status.PASSED, metrics=metrics, reasons=reasons, artifacts=artifacts,
                       details={"evalset_digest": ctx.digests["evalsets"],
                                "tasks": {t: s.metrics for t, s in result.tasks.items()},
                                "lm_eval_version": result.lm_eval_version, "command": result.command,
                                "commands": result.commands,
                                "prompting": {t: m.to_dict() for t, m in modes.items()},
                                "loglikelihood": cfg.loglikelihood, "limit": cfg.limit,
                                # seconds lm-eval had been starting before the stage (None: started by the stage)
                                "prestarted_lead_s": prestarted.lead_s if prestarted else None})
