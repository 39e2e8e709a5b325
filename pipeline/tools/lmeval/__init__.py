"""lm-evaluation-harness, run as a subprocess against an OpenAI-compatible server.

    evalset.py   the task YAMLs: defined tasks, their metrics and shots, how each is prompted, the evalset digest
    run.py       running lm-eval (run_lmeval, or prestart while the server boots) and its environment
    results.py   parsing what it wrote (LmEvalRun: per-task scores, per-item records)

Public API (re-exported here):
    run_lmeval(base_url, model_name, tokenizer_dir, tasks, include_path, output_dir, ...) -> LmEvalRun
    evalset_digest(include_path, tasks, modes=None) -> str
    has_chat_template(model_dir) -> bool        ChatMode: how one task is prompted (raw or chat template)
    parse_output(results_file) -> LmEvalRun      (parse an existing results_<ts>.json + samples)
"""

from pipeline.tools.lmeval.evalset import (
    RAW,
    ChatMode,
    defined_tasks,
    evalset_digest,
    has_chat_template,
    resolve_task_yamls,
    task_config,
    task_metrics,
    task_shots,
)
from pipeline.tools.lmeval.results import LmEvalRun, TaskScores, doc_hash, parse_output, parse_samples
from pipeline.tools.lmeval.run import (
    GO_ENV,
    Prestarted,
    build_command,
    lmeval_env,
    mode_groups,
    prestart,
    run_lmeval,
)

__all__ = [
    "GO_ENV", "RAW", "ChatMode", "LmEvalRun", "Prestarted", "TaskScores", "build_command", "defined_tasks",
    "doc_hash", "evalset_digest", "has_chat_template", "lmeval_env", "mode_groups", "parse_output", "parse_samples",
    "prestart", "resolve_task_yamls", "run_lmeval", "task_config", "task_metrics", "task_shots",
]
