"""A sample gate report (rejected, with a compare table), as `run_gate` writes one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.report.document import GateReport


def sample_document(tmp_path: Path) -> dict[str, Any]:
    """The report as JSON (what report.json holds)."""
    return {
        "schema_version": 1, "gate_id": "g1", "model_name": "bot", "served_name": "chat@abc",
        "candidate": {"source": "git", "repo": "hub", "revision": "a" * 40, "uri": "git://hub@" + "a" * 40,
                      "files": {}},
        "verdict": "rejected", "exit_code": 1, "reasons": ["compare: format/pass: worse <script>alert(1)</script>"],
        "stages": [
            {"name": "format", "status": "failed", "duration_s": 1.5, "metrics": {"pass_rate": 0.25},
             "reasons": ["1/4 cases passed | **bold**"], "artifacts": {}, "details": {}},
            {"name": "compare", "status": "failed", "duration_s": 0.1, "metrics": {}, "reasons": [], "artifacts": {},
             "details": {"baseline": {"version": "3", "revision": "b" * 40, "reevaluated": False, "changed": []},
                         "metrics": [{"name": "format/pass", "baseline_mean": 0.75, "candidate_mean": 0.25,
                                      "delta": -0.5, "lower": -0.7, "upper": -0.3, "margin": 0.1, "floor": 0.5,
                                      "n": 4, "verdict": "fail"}]}},
        ],
        "run_dir": str(tmp_path), "tracking": {"run_id": "r" * 32, "experiment": "e", "model_version": "7"},
    }


def sample_report(tmp_path: Path) -> GateReport:
    """The same report, typed."""
    return GateReport.from_dict(sample_document(tmp_path))


def report_with_items(tmp_path: Path) -> GateReport:
    """The sample report over a run directory holding per-item results: items.json, two prompt cases
    (format/cases.jsonl) and two eval items, one of them in evals/items.jsonl."""
    (tmp_path / "format").mkdir()
    (tmp_path / "evals").mkdir()
    rows = [{"key": "support/a", "passed": True, "failures": [], "expectations": ["json_schema", "regex"],
             "output": "{}", "finish_reason": "stop", "latency_s": 0.5, "critical": True},
            {"key": "support/b", "passed": False, "expectations": ["json_schema", "max_chars"],
             "failures": [{"expectation": "json_schema", "reason": "missing 'age'", "path": "$"}],
             "output": "{\"x\": 1}", "finish_reason": "length", "latency_s": 1.25}]
    (tmp_path / "format" / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "evals" / "items.jsonl").write_text(json.dumps(
        {"task": "intent", "doc_hash": "h1", "doc_id": 0, "item_id": "intent-000", "acc": 1.0}) + "\n")
    (tmp_path / "items.json").write_text(json.dumps({"schema_version": 1, "digests": {}, "items": {
        "format/pass": {"support/a": 1.0, "support/b": 0.0}, "intent/acc": {"h1": 1.0, "h2": 0.0}}}))
    doc = sample_document(tmp_path)
    doc["stages"][0]["artifacts"] = {"cases.jsonl": str(tmp_path / "format" / "cases.jsonl")}
    doc["stages"].append({"name": "evals", "status": "passed", "duration_s": 1, "metrics": {}, "reasons": [],
                          "artifacts": {"items.jsonl": str(tmp_path / "evals" / "items.jsonl")}, "details": {}})
    doc["started_at"] = "2026-12-01T03:00:00+00:00"
    return GateReport.from_dict(doc)
