"""The quality gates on the real stack: prompt suites + lm-eval against vLLM on CPU, compared with a
production baseline recorded in a real MLflow server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.conftest import modelgate_cmd, vllm_processes, write_demo_release
from tests.e2e.test_gate_e2e import gate_env

pytestmark = pytest.mark.e2e
MODEL = "smollm2-quality-test"
LIMIT = 30  # items per lm-eval task: small for CI; the demo runs all 240


@pytest.fixture(scope="module")
def team(tmp_path_factory, demo_hub):
    """A team repository: the project's prompts/ and evalsets/, and a release.yaml with quality gates."""
    root = tmp_path_factory.mktemp("team")
    shutil.copytree(REPO / "prompts", root / "prompts")
    shutil.copytree(REPO / "evalsets", root / "evalsets", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def write_release(team, manifest, variant):
    path = write_demo_release(team, manifest, variant)
    data = yaml.safe_load(path.read_text())
    data["model"]["name"] = MODEL
    data["gates"] = {
        "format": {"concurrency": 4, "pass_rate": {"floor": 0.5, "margin": 0.15}},
        "evals": {"tasks": ["support_intent", "support_facts"], "num_concurrent": 4, "limit": LIMIT,
                  "metrics": {"support_intent/acc": {"floor": 0.3, "margin": 0.15},
                              "support_facts/exact_match": {"floor": 0.2, "margin": 0.15}}},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def gate(team, manifest, variant, mlflow_uri, home):
    config = write_release(team, manifest, variant)
    proc = subprocess.run(modelgate_cmd("gate", "--config", str(config)), capture_output=True, text=True,
                          env=gate_env(mlflow_uri, home), timeout=1500)
    report_path = re.search(r"^report: (.+)$", proc.stdout, re.M)
    report = json.loads(open(report_path.group(1)).read()) if report_path else None
    return proc, report


def compare_stage(report):
    return next(s for s in report["stages"] if s["name"] == "compare")


@pytest.fixture(scope="module")
def production(team, demo_hub, mlflow_server, tmp_path_factory):
    """First release: the demo candidate gated on absolute floors, then made production in the registry."""
    from mlflow.tracking import MlflowClient

    home = tmp_path_factory.mktemp("home")
    proc, report = gate(team, demo_hub, "instruct", mlflow_server, home)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_server)
    version = report["tracking"]["model_version"]
    client.set_registered_model_alias(MODEL, "production", version)
    return {"proc": proc, "report": report, "version": version, "home": home}


def test_first_release_uses_absolute_floors_and_records_items(production, mlflow_server):
    from mlflow.tracking import MlflowClient

    out, report = production["proc"].stdout, production["report"]
    assert "baseline: none (first release): absolute floors only" in out
    assert re.search(r"^\s+format\s+passed", out, re.M) and re.search(r"^\s+evals\s+passed", out, re.M)
    rows = {m["name"]: m for m in compare_stage(report)["details"]["metrics"]}
    assert set(rows) == {"format/pass", "support_intent/acc", "support_facts/exact_match"}
    assert rows["format/pass"]["n"] == 44 and rows["support_intent/acc"]["n"] == LIMIT
    assert all(r["baseline_mean"] is None and r["verdict"] == "pass" for r in rows.values())
    client = MlflowClient(tracking_uri=mlflow_server)
    mv = client.get_model_version(MODEL, production["version"])
    assert mv.source.endswith("@" + report["candidate"]["revision"]) and mv.run_id == report["tracking"]["run_id"]
    assert mv.tags["modelgate.digest.suites"] == report["digests"]["suites"]
    run = client.get_run(mv.run_id)
    assert run.data.metrics["format.pass_rate"] == rows["format/pass"]["candidate_mean"]
    assert run.data.metrics["compare.support_intent.acc.candidate_mean"] == rows["support_intent/acc"]["candidate_mean"]
    arts = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {"items.json", "report.json"} <= arts
    assert {a.path for a in client.list_artifacts(mv.run_id, "stages/format")} == {"stages/format/cases.jsonl"}
    assert {a.path for a in client.list_artifacts(mv.run_id, "stages/compare")} == {"stages/compare/comparison.csv"}
    items = json.load(open(client.download_artifacts(mv.run_id, "items.json", str(production["home"]))))
    assert len(items["items"]["format/pass"]) == 44 and len(items["items"]["support_facts/exact_match"]) == LIMIT


def test_degraded_variant_is_rejected_against_the_production_baseline(production, team, demo_hub, mlflow_server):
    proc, report = gate(team, demo_hub, "degraded", mlflow_server, production["home"])
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    out = proc.stdout
    assert f"baseline: production v{production['version']}" in out and "paired with its recorded" in out
    assert "verdict: REJECTED (exit 1)" in out
    rows = {m["name"]: m for m in compare_stage(report)["details"]["metrics"]}
    failing = [name for name, m in rows.items() if m["verdict"] == "fail"]
    assert "format/pass" in failing
    for name in failing:  # each failing metric is named in the verdict's reasons
        assert any(r.startswith(f"compare: {name}:") or f"compare: {name} " in r for r in report["reasons"]), report["reasons"]
    assert rows["format/pass"]["delta"] < -0.15 and rows["format/pass"]["upper"] < -0.15
    assert compare_stage(report)["details"]["baseline"]["reevaluated"] is False
    assert vllm_processes() == []


def test_changed_evalset_reevaluates_the_baseline_on_the_same_items(production, team, demo_hub, mlflow_server):
    data = team / "evalsets" / "support_facts.jsonl"
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[:-1]))  # drop one item: the evalset digest changes
    try:
        proc, report = gate(team, demo_hub, "instruct", mlflow_server, production["home"])
    finally:
        data.write_text("".join(lines))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    base = compare_stage(report)["details"]["baseline"]
    assert base["reevaluated"] is True and "evalsets" in base["changed"]
    assert "re-evaluated in this gate" in proc.stdout
    assert "re-evaluating" in proc.stderr and proc.stderr.count("vLLM ready after") == 2
    rows = {m["name"]: m for m in compare_stage(report)["details"]["metrics"]}
    assert rows["support_facts/exact_match"]["n"] == LIMIT and rows["support_facts/exact_match"]["baseline_mean"] is not None
    assert vllm_processes() == []
