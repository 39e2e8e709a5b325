"""Regression variants of real-world kinds, each gated end to end against production (`instruct`, released once
per session by tests/support/quality.py): a changed chat template, a wrong eos token, removed layers and a
too-aggressive quantization are each rejected (exit 1) with a first reason naming the gate and its evidence;
an identical-weights candidate at a new commit (A/A) is never rejected, and its items hardly ever flip.

Each gate prints one line `variant-result: {...}` (verdict, exit code, first reason, candidate vs production
per metric, flip counts) for the release notes; run with `-s` to see them."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.processes import vllm_processes
from tests.support.quality import flip_rates, gate, metric_rows

pytestmark = pytest.mark.e2e

# variant -> the gate its first reason must name: "format" (the suite's floor or a critical case) or
# "compare" for a metric that fell below production by more than its margin (or below its floor).
REGRESSIONS = {
    "template": r"^(format: |compare: format/pass)",
    "eos": r"^(format: |compare: format/pass)",
    "shallow": r"^(format: |compare: (format/pass|support_intent/acc|support_facts/exact_match))",
    "lowbit": r"^(format: |compare: (format/pass|support_intent/acc|support_facts/exact_match))",
}
EVIDENCE = re.compile(r"\d+/\d+ cases passed|critical case|delta|mean|bound|[<>]=?\s*-?\d|\d\.\d")


def summary(variant: str, proc, report, production) -> dict:
    """What the release notes show for one variant gate: verdict, exit code, first reason, metrics, flips."""
    rows = metric_rows(report) if report else {}
    return {"variant": variant, "verdict": report["verdict"] if report else None, "exit": proc.returncode,
            "first_reason": (report or {}).get("reasons", [None])[0] if report and report["reasons"] else None,
            "metrics": {name: {"candidate": r["candidate_mean"], "production": r["baseline_mean"],
                               "delta": r["delta"], "verdict": r["verdict"]} for name, r in rows.items()},
            "flips": {name: list(v) for name, v in flip_rates(report, production["report"]).items()}
            if report else {}}


@pytest.mark.parametrize("variant", sorted(REGRESSIONS))
def test_regression_variant_is_rejected_naming_the_gate_and_evidence(variant, quality_production, quality_team,
                                                                     demo_hub, mlflow_server):
    proc, report = gate(quality_team, demo_hub, variant, mlflow_server, quality_production["home"])
    assert report is not None, proc.stdout + proc.stderr[-3000:]
    print("variant-result: " + json.dumps(summary(variant, proc, report, quality_production)))
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "verdict: REJECTED (exit 1)" in proc.stdout
    assert f"baseline: production v{quality_production['version']}" in proc.stdout
    first = report["reasons"][0]
    assert re.search(REGRESSIONS[variant], first), report["reasons"]
    assert EVIDENCE.search(first), first
    assert vllm_processes() == []


def test_identical_weights_at_a_new_commit_is_never_rejected(quality_production, quality_team, demo_hub,
                                                            mlflow_server):
    """A/A: `aa` is `instruct` plus a README.md: same weights, same behaviour, another commit."""
    aa, instruct = demo_hub["variants"]["aa"], demo_hub["variants"]["instruct"]
    assert aa["revision"] != instruct["revision"]
    assert {k: v for k, v in aa["files"].items() if k != "README.md"} == instruct["files"]
    proc, report = gate(quality_team, demo_hub, "aa", mlflow_server, quality_production["home"])
    assert report is not None, proc.stdout + proc.stderr[-3000:]
    result = summary("aa", proc, report, quality_production)
    print("variant-result: " + json.dumps(result))
    assert proc.returncode in (0, 4), proc.stdout + proc.stderr[-3000:]  # passed or inconclusive, never rejected
    assert report["verdict"] in ("passed", "inconclusive")
    flips, paired = (sum(v[i] for v in result["flips"].values()) for i in (0, 1))
    assert paired == sum(r["n"] for r in metric_rows(report).values()) > 0
    # temperature 0, same machine, same serving configuration: (almost) every item gets the same value
    assert flips / paired <= 0.05, result["flips"]
    assert vllm_processes() == []
