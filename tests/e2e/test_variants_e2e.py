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

# Each regression breaks the output formats first (measured on 2 CPU cores, 44 format cases and 30 items per
# task: format/pass 0.70 for production; eos 0.18, template 0.32, shallow 0.11, lowbit 0.39): the format stage
# fails on critical cases (or its floor), and the comparison finds format/pass below production's by more
# than the margin. shallow and lowbit also lose eval accuracy, not yet provably at 30 items (inconclusive).
REGRESSIONS = ("eos", "lowbit", "shallow", "template")
FIRST_REASON = re.compile(r"^format: (critical case\(s\) failed: support/\w+|\d+/\d+ cases passed)")


def summary(variant: str, proc, report, production) -> dict:
    """What the release notes show for one variant gate: verdict, exit code, first reason, metrics, flips."""
    rows = metric_rows(report) if report else {}
    return {"variant": variant, "verdict": report["verdict"] if report else None, "exit": proc.returncode,
            "first_reason": report["reasons"][0] if report and report["verdict"] != "passed" else None,
            "metrics": {name: {"candidate": r["candidate_mean"], "production": r["baseline_mean"],
                               "delta": r["delta"], "verdict": r["verdict"]} for name, r in rows.items()},
            "flips": {name: list(v) for name, v in flip_rates(report, production["report"]).items()}
            if report else {}}


@pytest.mark.parametrize("variant", REGRESSIONS)
def test_regression_variant_is_rejected_naming_the_gate_and_evidence(variant, quality_production, quality_team,
                                                                     demo_hub, mlflow_server):
    proc, report = gate(quality_team, demo_hub, variant, mlflow_server, quality_production["home"])
    assert report is not None, proc.stdout + proc.stderr[-3000:]
    print("variant-result: " + json.dumps(summary(variant, proc, report, quality_production)))
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "verdict: REJECTED (exit 1)" in proc.stdout
    assert f"baseline: production v{quality_production['version']}" in proc.stdout
    assert FIRST_REASON.search(report["reasons"][0]), report["reasons"]
    fmt = metric_rows(report)["format/pass"]
    assert fmt["verdict"] == "fail" and fmt["delta"] < -0.15, fmt  # margin 0.15
    named = [r for r in report["reasons"] if r.startswith("compare: format/pass: candidate ")]
    assert named and f"vs baseline {fmt['baseline_mean']:.4g}" in named[0], report["reasons"]
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
