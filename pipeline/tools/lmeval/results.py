"""What lm-eval wrote, parsed: per-task scores and one record per evaluated document (`LmEvalRun`), each document
known by the sha256 of its canonical JSON (`doc_hash`) so two runs pair item by item."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TaskScores:
    """Aggregated scores of one task. Metric keys are lm-eval's, minus the ``,none`` filter suffix."""

    task: str
    n_items: int
    metrics: dict[str, float]
    stderr: dict[str, float | None]
    n_shot: int | None = None
    version: Any = None


@dataclass
class LmEvalRun:
    """One lm-eval run: per-task scores, per-item records, and how long it took.

    ``items`` holds one dict per evaluated document:
    ``{"task", "doc_id", "doc_hash", "item_id", <metric>: value, ...}`` where ``doc_hash`` is the sha256
    of the document's canonical JSON (sorted keys, no whitespace) and metric values are floats as lm-eval
    logged them: 0/1 for acc / acc_norm / exact_match, any number for a score (token F1: 0..1); values that
    are not numbers (corpus-level metrics log (gold, prediction) pairs) are left out. ``(task, doc_hash)``
    pairs items across runs for paired tests.
    """

    tasks: dict[str, TaskScores]
    items: list[dict[str, Any]]
    lm_eval_version: str
    wall_time_s: float
    eval_time_s: float | None
    n_items: int
    items_per_s: float
    num_concurrent: int
    limit: int | None
    command: list[str]
    results_file: str
    samples_files: dict[str, str] = field(default_factory=dict)
    items_file: str = ""
    commands: list[list[str]] = field(default_factory=list)  # one lm-eval invocation per prompting mode
    results_files: list[str] = field(default_factory=list)
    modes: dict[str, dict[str, bool]] = field(default_factory=dict)  # task -> ChatMode.to_dict()

    def scores(self, task: str, metric: str) -> dict[str, float]:
        """doc_hash -> per-item value of ``metric`` for ``task`` (for paired comparisons)."""
        return {it["doc_hash"]: float(it[metric]) for it in self.items if it["task"] == task and metric in it}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("items")
        return d


def doc_hash(doc: dict[str, Any]) -> str:
    """sha256 of a document's canonical JSON."""
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def _metric_key(key: str) -> str:
    return key[: -len(",none")] if key.endswith(",none") else key


def parse_samples(path: Path, task: str) -> list[dict[str, Any]]:
    """Per-item records from one ``samples_<task>_<ts>.jsonl`` written by ``--log_samples``."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            s = json.loads(line)
            filt = s.get("filter", "none")
            rec: dict[str, Any] = {
                "task": task, "doc_id": s["doc_id"], "doc_hash": doc_hash(s["doc"]),
                "item_id": s["doc"].get("id") if isinstance(s["doc"], dict) else None,
            }
            for m in s.get("metrics", []):
                # numbers as they are (0/1 for acc / exact_match, fractions for scores like token F1, NaN kept
                # for the gate to name); not a number (a corpus metric's (gold, prediction) pair): no per-item value
                if isinstance(s.get(m), (int, float)):
                    rec[m if filt == "none" else f"{m},{filt}"] = float(s[m])
            out.append(rec)
    return sorted(out, key=lambda r: r["doc_id"])


def parse_output(results_file: Path) -> LmEvalRun:
    """Parse a ``results_<ts>.json`` and its sibling ``samples_*_<ts>.jsonl`` files.

    Run fields that only the caller knows (wall time, concurrency, command) are left at defaults.
    """
    results_file = Path(results_file)
    res = json.loads(results_file.read_text(encoding="utf-8"))
    ts = results_file.name[len("results_"): -len(".json")]
    tasks: dict[str, TaskScores] = {}
    items: list[dict[str, Any]] = []
    samples_files: dict[str, str] = {}
    for task, vals in res.get("results", {}).items():
        if task in res.get("group_subtasks", {}):
            continue  # group rows are aggregates of their subtasks
        metrics, stderr = {}, {}
        for k, v in vals.items():
            if k in ("name", "alias", "sample_len") or "_stderr," in k:
                continue
            if isinstance(v, (int, float)):
                metrics[_metric_key(k)] = float(v)
                se = vals.get(k.replace(",", "_stderr,", 1))
                stderr[_metric_key(k)] = float(se) if isinstance(se, (int, float)) else None
        n = (res.get("n-samples", {}).get(task) or {}).get("effective", vals.get("sample_len", 0))
        tasks[task] = TaskScores(task, int(n), metrics, stderr, res.get("n-shot", {}).get(task),
                                 res.get("versions", {}).get(task))
        sf = results_file.parent / f"samples_{task}_{ts}.jsonl"
        if sf.exists():
            samples_files[task] = str(sf)
            items += parse_samples(sf, task)
    n_items = sum(t.n_items for t in tasks.values())
    return LmEvalRun(
        tasks=tasks, items=items, lm_eval_version=str(res.get("lm_eval_version", "")),
        wall_time_s=0.0, eval_time_s=_float(res.get("total_evaluation_time_seconds")), n_items=n_items,
        items_per_s=0.0, num_concurrent=0, limit=None, command=[], results_file=str(results_file),
        samples_files=samples_files,
    )


def _float(v: Any) -> float | None:
    try:
        return round(float(v), 3)
    except (TypeError, ValueError):
        return None
