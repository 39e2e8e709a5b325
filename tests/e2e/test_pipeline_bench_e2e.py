"""The instrument cannot rot: benchmarks/pipeline_bench.py end to end at a tiny size prints every figure.

Tiny: 2 prompt cases, 2 eval items per task, one load level of 2 requests, a saturation run of 4 requests,
--enforce-eager (one vLLM boot: the saturation run uses the gate's server). Only that each figure is printed, with a
number and a goal verdict where it has a goal, is asserted; the numbers are the machine's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.paths import REPO
from tests.support.processes import vllm_processes
from tests.support.quality import make_team
from tests.support.releases import write_demo_release

pytestmark = pytest.mark.e2e

NUM = r"[0-9]+(?:\.[0-9]+)?"
VERDICT = r"goal (?:not )?met"
FIGURES = {
    "gate": rf"^gate: exit \d+, verdict \w+, wall {NUM} s$",
    "boots per gate": rf"^vLLM boots per gate: \d+ \(goal: .*: {VERDICT}\)$",
    "stage fetch": rf"^  fetch +\w+ +{NUM} s$",
    "stage serve": rf"^  serve +\w+ +{NUM} s$",
    "stage format": rf"^  format +\w+ +{NUM} s$",
    "stage evals": rf"^  evals +\w+ +{NUM} s$",
    "stage load": rf"^  load +\w+ +{NUM} s$",
    "time outside the stages": rf"^  outside +-?{NUM} s ",
    "evals items/s": rf"^evals-stage items/s: {NUM} \(\d+ items; goal >= .*: {VERDICT}\)$",
    "evals workload tokens": rf"^evals workload .*: \d+ requests, \d+ prompt \+ \d+ generated tokens in {NUM} s",
    "saturated throughput": rf"^saturated serving benchmark, same server, same mix .*: {NUM} total tok/s",
    "saturation ratio": rf"^evals-stage token throughput / saturated: {NUM} \(goal >= {NUM}: {VERDICT}\)$",
    "limit: boot": rf"^  vLLM boot: +{NUM} s$",
    "limit: eval tokens": rf"^  eval tokens at saturated throughput: +{NUM} s \(\d+ tokens at \d+ tok/s\)$",
    "limit: format tokens": rf"^  format tokens at saturated throughput: +{NUM} s \(\d+ tokens at \d+ tok/s\)$",
    "limit: load test": rf"^  load test traffic: +{NUM} s$",
    "limit": rf"^  limit: +{NUM} s$",
    "limit, cache free": rf"^the same limit with prompt tokens served by the prefix cache counted as free: {NUM} s, ",
    "gate / limit": rf"^gate wall time / limit: {NUM} / {NUM} = {NUM} \(goal <= {NUM}: {VERDICT}\)$",
    "gate speed-up": rf"^gate speed-up vs today's {NUM} s: {NUM}x \(goal >= {NUM}x: {VERDICT}\)$",
}


def test_pipeline_bench_prints_every_figure(demo_hub, model_home, tmp_path):
    team = make_team(tmp_path / "team")
    config = write_demo_release(team, demo_hub, gates={
        "format": {"concurrency": 2, "pass_rate": {"floor": 0.0, "margin": 1.0}},
        "evals": {"tasks": ["support_intent", "support_facts"], "num_concurrent": 2},
        "load": {"peak_concurrency": 1, "levels": [1, 2],
                 "prompts": {"input_len": 32, "output_len": 8, "requests_per_level": 2},
                 "slo": {"p95_e2el_ms": 120000}}})
    env = {**os.environ, "MODELGATE_HOME": str(model_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pipeline_bench.py"), "--config", str(config), "--enforce-eager",
         "--items", "2", "--prompt-cases", "2", "--load-levels", "1", "--saturation-concurrency", "2",
         "--saturation-prompts", "4"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    missing = [name for name, pattern in FIGURES.items() if not re.search(pattern, proc.stdout, re.M)]
    assert not missing, f"figures not printed: {missing}\n{proc.stdout}"
    assert len(re.findall(r"^  load +\S+ conc +1: ", proc.stdout, re.M)) == 1  # the one level asked for
    assert vllm_processes(model_home) == []
