"""The quality-gate setup shared by the e2e modules that gate demo hub variants on the real stack: one team
repository with quality gates, and one production release (`instruct`, gated, approved and promoted) per
session, so each module pairs its candidates with the same recorded baseline instead of gating its own.

    gate(team, manifest, "shallow", mlflow_uri, home) -> (CompletedProcess, report dict or None)
    gate(..., serving={"extra_args": [...]})  with serving settings added to the test-sized ones
    metric_rows(report)          compare stage rows by metric name
    flip_rates(cand, base)       per metric, the fraction of paired items whose value differs
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.support import cli
from tests.support.git import commit_all
from tests.support.releases import copy_project_inputs, write_demo_release
from tests.support.signing import KEY, audit_env, trusted_signing

MODEL = "smollm2-quality-test"
LIMIT = 30  # items per lm-eval task: small for CI; the demo runs all 240
# every quality gate runs with these known fake secrets in its environment; none may be written anywhere
FAKE_SECRETS = {
    "HF_TOKEN": "hf_FakeLeakCheck7Qm2Zr9Xw4Kp1Vb6",
    "GITHUB_TOKEN": "ghp_FakeLeakCheck3Ln8Ty5Ud0Sg2Hj7",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-FakeLeakCheck-pw-4Rk9Ez1",
    "SUPPORT_DB_PASSWORD": "db-FakeLeakCheck-secret-8Wq3Nc6",  # named in release.yaml security.secret_env
}
GATES = {
    "format": {"concurrency": 4, "pass_rate": {"floor": 0.5, "margin": 0.15}},
    "evals": {"tasks": ["support_intent", "support_facts"], "num_concurrent": 4, "limit": LIMIT,
              "metrics": {"support_intent/acc": {"floor": 0.3, "margin": 0.15},
                          "support_facts/exact_match": {"floor": 0.2, "margin": 0.15},
                          # a score (token F1, 0..1): compared by the paired bootstrap, not McNemar
                          "support_facts/f1": {"floor": 0.3, "margin": 0.15}}},
}


def make_team(root: Path) -> Path:
    """A team repository: the project's prompts/ and evalsets/ committed (release.yaml is written per gate)."""
    copy_project_inputs(root, "prompts", "evalsets")
    commit_all(root, "team repository")
    return root


def secret_env() -> dict[str, str]:
    # the test MLflow server ignores credentials; the client still sends them (basic auth) on every call.
    # The session's signing key (a real one, and a secret too): every quality gate is a signed release gate.
    return {**FAKE_SECRETS, "MLFLOW_TRACKING_USERNAME": "leakcheck-user", "MODELGATE_SIGNING_KEY": KEY.pem}


def signing_key_body() -> str:
    """The base64 body of the session's private key PEM: it must appear nowhere the gate wrote."""
    return "".join(line for line in KEY.pem.splitlines() if not line.startswith("-----"))


def gate(team: Path, manifest: dict, variant: str, mlflow_uri: str, home: Path, gates: dict | None = None,
         serving: dict | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """`modelgate gate` (a child process) of the demo hub `variant` with the quality GATES (or `gates`), served
    with the test-sized serving settings (plus `serving`)."""
    config = write_demo_release(team, manifest, variant, model=MODEL, gates=gates or GATES, serving=serving,
                                promotion={"release_managers": ["alice", "bob"], "approvals_required": 1},
                                signing=trusted_signing(),
                                security={"secret_env": ["SUPPORT_DB_PASSWORD"]})
    proc = cli.run_gate(config, mlflow_uri, home, env=secret_env(), timeout=1500)
    report_path = re.search(r"^report: (.+)$", proc.stdout, re.M)
    report = json.loads(open(report_path.group(1)).read()) if report_path else None
    return proc, report


def release_cmd(team: Path, mlflow_uri: str, home: Path, *args: str, expect: int = 0,
                ) -> subprocess.CompletedProcess[str]:
    proc = cli.run_subprocess(*args, "--config", str(team / "release.yaml"),
                              env={**cli.gate_env(mlflow_uri, home), **audit_env()}, timeout=120)
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return proc


def release_production(team: Path, manifest: dict, mlflow_uri: str, home: Path) -> dict[str, Any]:
    """First release: `instruct` gated on absolute floors, approved by alice and promoted by bob."""
    proc, report = gate(team, manifest, "instruct", mlflow_uri, home)
    assert proc.returncode == 0 and report is not None, proc.stdout + proc.stderr[-3000:]
    version = report["tracking"]["model_version"]
    release_cmd(team, mlflow_uri, home, "approve", "--version", version, "--actor", "alice", "--reason", "first")
    release_cmd(team, mlflow_uri, home, "promote", "--version", "candidate", "--actor", "bob")
    return {"proc": proc, "report": report, "version": version, "home": home}


def compare_stage(report: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in report["stages"] if s["name"] == "compare")


def metric_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in compare_stage(report)["details"]["metrics"]}


def run_items(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The per-item values a gate recorded (its run directory's items.json): metric -> item key -> value."""
    return json.loads((Path(report["run_dir"]) / "items.json").read_text())["items"]


def flip_rates(candidate: dict[str, Any], baseline: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Per metric of both gates: (items whose value differs, paired items)."""
    cand, base = run_items(candidate), run_items(baseline)
    rates = {}
    for name in sorted(set(cand) & set(base)):
        keys = sorted(set(cand[name]) & set(base[name]))
        rates[name] = (sum(cand[name][k] != base[name][k] for k in keys), len(keys))
    return rates
