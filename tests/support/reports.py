"""A sample gate report (rejected, with a compare table), as `run_gate` writes one."""

from __future__ import annotations

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
