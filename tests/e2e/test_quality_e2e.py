"""The quality gates on the real stack: prompt suites + lm-eval against vLLM on CPU, compared with a
production baseline recorded in a real MLflow server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.git import git
from tests.support.processes import vllm_processes
from tests.support.quality import (
    FAKE_SECRETS,
    GATES,
    LIMIT,
    MODEL,
    compare_stage,
    gate,
    release_cmd,
    signing_key_body,
)
from tests.support.records import version_record

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def production(quality_production):
    """The session's first release of `instruct`, shared with test_variants_e2e.py."""
    return quality_production


def test_first_release_uses_absolute_floors_and_records_items(production, mlflow_server):
    from mlflow.tracking import MlflowClient

    out, report = production["proc"].stdout, production["report"]
    assert "baseline: none (first release): absolute floors only" in out
    assert re.search(r"^\s+format\s+passed", out, re.M) and re.search(r"^\s+evals\s+passed", out, re.M)
    rows = {m["name"]: m for m in compare_stage(report)["details"]["metrics"]}
    assert set(rows) == {"format/pass", "support_intent/acc", "support_facts/exact_match", "support_facts/f1"}
    assert rows["support_facts/f1"]["kind"] == "continuous" and rows["support_facts/exact_match"]["kind"] == "binary"
    assert all(r["mde"] is None for r in rows.values())  # no baseline: no paired sensitivity
    assert rows["format/pass"]["n"] == 44 and rows["support_intent/acc"]["n"] == LIMIT
    assert all(r["baseline_mean"] is None and r["verdict"] == "pass" for r in rows.values())
    client = MlflowClient(tracking_uri=mlflow_server)
    mv = client.get_model_version(MODEL, production["version"])
    assert mv.source.endswith("@" + report["candidate"]["revision"]) and mv.run_id == report["tracking"]["run_id"]
    assert version_record(mlflow_server, MODEL, mv.version)["digests"]["suites"] == report["digests"]["suites"]
    run = client.get_run(mv.run_id)
    assert run.data.metrics["format.pass_rate"] == rows["format/pass"]["candidate_mean"]
    assert run.data.metrics["compare.support_intent.acc.candidate_mean"] == rows["support_intent/acc"]["candidate_mean"]
    arts = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {"items.json", "report.json"} <= arts
    assert {a.path for a in client.list_artifacts(mv.run_id, "stages/format")} == {"stages/format/cases.jsonl"}
    assert {a.path for a in client.list_artifacts(mv.run_id, "stages/compare")} == {"stages/compare/comparison.csv"}
    items = json.load(open(client.download_artifacts(mv.run_id, "items.json", str(production["home"]))))
    assert len(items["items"]["format/pass"]) == 44 and len(items["items"]["support_facts/exact_match"]) == LIMIT
    # the demo model has a chat template: both tasks were prompted through it (default chat_template: auto)
    assert run.data.params["evals.chat_template.support_intent"] == "true"
    assert run.data.params["evals.fewshot_as_multiturn.support_facts"] == "true"
    assert prompts_of(report, "support_intent")[0].startswith("<|im_start|>system\nClassify each customer")
    assert prompts_of(report, "support_facts")[0].startswith("<|im_start|>system\nAnswer each question")
    # lm-eval was started while vLLM booted and released by the evals stage
    evals = next(s for s in report["stages"] if s["name"] == "evals")
    assert evals["details"]["prestarted_lead_s"] > 0
    assert re.search(r"evals: lm-eval: started [\d.]+s before this stage, released now", production["proc"].stderr)


def prompts_of(report, task):
    """The prompts lm-eval sent for `task` in this gate (its per-item samples' `arguments`)."""
    evals = next(s for s in report["stages"] if s["name"] == "evals")
    prompts = []
    for results in Path(evals["artifacts"]["lmeval_run.json"]).parent.rglob(f"samples_{task}_*.jsonl"):
        for line in results.read_text().splitlines():
            args = json.loads(line)["arguments"]
            prompts += [a["arg_0"] for a in args.values()] if isinstance(args, dict) else [a[0] for a in args]
    assert len(prompts) >= LIMIT, (task, len(prompts))
    chat = [p for p in prompts if "<|im_start|>" in p]
    assert chat == [] or (len(chat) == len(prompts) and all(p.endswith("<|im_start|>assistant\n") for p in chat))
    return prompts


def test_no_secret_reaches_output_files_or_mlflow(production, mlflow_server, tmp_path):
    """Fake HF/GitHub/MLflow/custom secrets were in the gate's environment: grep everything it wrote."""
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    proc, report = production["proc"], production["report"]
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(report["tracking"]["run_id"])
    mv = client.get_model_version(MODEL, production["version"])
    texts = {"stdout": proc.stdout, "stderr": proc.stderr,
             "mlflow params": repr(run.data.params), "mlflow tags": repr(run.data.tags),
             "mlflow metrics": repr(run.data.metrics),
             "model version": repr(mv.tags) + mv.source + (mv.description or "")}
    run_dir = Path(report["run_dir"])
    local = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"report.json", "report.md", "server.log", "items.json"} <= {p.name for p in local}
    assert any(p.name == "lm_eval.log" for p in local) and any(p.name.startswith("samples_") for p in local)
    downloaded = Path(download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "artifacts"),
                                         tracking_uri=mlflow_server))
    remote = [p for p in downloaded.rglob("*") if p.is_file()]
    assert {"report.json", "server.log", "cases.jsonl", "items.jsonl"} <= {p.name for p in remote}
    for path in local + remote:
        texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for where, text in texts.items():
        for name, value in FAKE_SECRETS.items():
            assert value not in text, f"{name} leaked into {where}"
        assert signing_key_body() not in text, f"the signing key leaked into {where}"
        # the staging server's per-gate API key: never on a command line nor in a header dump
        assert not re.search(r"Bearer [A-Za-z0-9_-]{20,}|--api-key|VLLM_API_KEY=", text), where
    assert len(texts) > 20
    assert mv.tags["modelgate.signature.status"] == "signed"  # the gate had the key, and used it


def test_degraded_variant_is_rejected_against_the_production_baseline(production, quality_team, demo_hub,
                                                                      mlflow_server):
    proc, report = gate(quality_team, demo_hub, "degraded", mlflow_server, production["home"])
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    out = proc.stdout
    assert f"baseline: production v{production['version']}" in out and "paired with its recorded" in out
    assert "verdict: REJECTED (exit 1)" in out
    rows = {m["name"]: m for m in compare_stage(report)["details"]["metrics"]}
    failing = [name for name, m in rows.items() if m["verdict"] == "fail"]
    assert "format/pass" in failing
    for name in failing:  # each failing metric is named in the verdict's reasons
        named = [r for r in report["reasons"] if r.startswith(f"compare: {name}:") or f"compare: {name} " in r]
        assert named, report["reasons"]
    assert rows["format/pass"]["delta"] < -0.15 and rows["format/pass"]["upper"] < -0.15
    assert compare_stage(report)["details"]["baseline"]["reevaluated"] is False
    f1 = rows["support_facts/f1"]
    assert f1["kind"] == "continuous" and f1["method"].startswith("paired percentile bootstrap")
    assert f1["n"] == LIMIT and f1["verdict"] == "fail" and f1["upper"] < -0.15 and f1["p_value"] is None
    assert rows["support_facts/exact_match"]["method"].startswith("exact conditional McNemar")
    assert_sensitivity_stated(rows, proc.stdout, report, mlflow_server)
    assert vllm_processes() == []


def assert_sensitivity_stated(rows, out, report, mlflow_uri):
    """Every paired metric has its smallest detectable drop next to the margin, in the report, the console,
    comparison.csv and MLflow; a margin below it is flagged underpowered with what could have been missed."""
    import csv

    from mlflow.tracking import MlflowClient

    assert "MDE 80%" in out
    for name, row in rows.items():
        assert row["mde"] > 0 and row["underpowered"] == (row["margin"] < row["mde"])
        assert (row["discordance"] is not None) == (row["kind"] == "binary") != (row["sd_diff"] is not None)
        if row["underpowered"] and row["verdict"] != "fail":  # a rejected metric was not missed
            assert f"{name}: UNDERPOWERED: margin {row['margin']:g}" in out and "could have missed drops" in out
    table = {r["name"]: r for r in csv.DictReader(open(compare_stage(report)["artifacts"]["comparison.csv"]))}
    assert {n: t["kind"] for n, t in table.items()} == {n: r["kind"] for n, r in rows.items()}
    metrics = MlflowClient(tracking_uri=mlflow_uri).get_run(report["tracking"]["run_id"]).data.metrics
    assert metrics["compare.support_facts.f1.mde"] == pytest.approx(rows["support_facts/f1"]["mde"])


def test_changed_evalset_reevaluates_the_baseline_on_the_same_items(production, quality_team, demo_hub, mlflow_server):
    """One item dropped, and support_facts prompted without the chat template: either changes the evalset
    digest. Both gates (candidate and re-evaluated baseline) run the two tasks as two lm-eval invocations."""
    data = quality_team / "evalsets" / "support_facts.jsonl"
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[:-1]))  # drop one item: the evalset digest changes
    gates = {**GATES, "evals": {**GATES["evals"], "per_task": {"support_facts": {"chat_template": False}}}}
    try:
        proc, report = gate(quality_team, demo_hub, "instruct", mlflow_server, production["home"], gates)
    finally:
        data.write_text("".join(lines))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    base = compare_stage(report)["details"]["baseline"]
    assert base["reevaluated"] is True and "evalsets" in base["changed"]
    # only the evals are measured again on the baseline: its prompt suites did not change, their items still pair
    assert base["reevaluated_metrics"] == ["support_facts/exact_match", "support_facts/f1", "support_intent/acc"]
    assert "re-evaluated in this gate for support_facts/exact_match" in proc.stdout
    rows = {m["name"]: m for m in compare_stage(report)["details"]["metrics"]}
    recorded = {m["name"]: m for m in compare_stage(production["report"])["details"]["metrics"]}
    assert rows["format/pass"]["baseline_mean"] == recorded["format/pass"]["candidate_mean"]
    assert "re-evaluating" in proc.stderr and proc.stderr.count("vLLM ready after") == 2
    facts = rows["support_facts/exact_match"]
    assert facts["n"] == LIMIT and facts["baseline_mean"] is not None
    evals = next(s for s in report["stages"] if s["name"] == "evals")
    assert evals["details"]["prompting"]["support_facts"]["apply_chat_template"] is False
    assert len(evals["details"]["commands"]) == 2 and "--apply_chat_template" in evals["details"]["commands"][0]
    assert evals["details"]["prestarted_lead_s"] > 0  # the first invocation was prestarted, the second was not
    assert not any("<|im_start|>" in p for p in prompts_of(report, "support_facts"))
    assert all("<|im_start|>" in p for p in prompts_of(report, "support_intent"))
    f1 = rows["support_facts/f1"]  # the same model re-evaluated: a score within its margin, by the bootstrap
    assert f1["kind"] == "continuous" and f1["method"].startswith("paired percentile bootstrap")
    assert f1["n"] == LIMIT and f1["verdict"] == "pass" and f1["lower"] >= -0.15
    assert_sensitivity_stated(rows, proc.stdout, report, mlflow_server)
    assert vllm_processes() == []


def test_release_flow_on_the_real_model(production, quality_team, mlflow_server):
    """The gates above registered real versions: a rejected one cannot be approved or promoted; a passed
    one is approved, promoted (alias + git tag), resolved for deployment, and rolled back in seconds."""
    import time

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    versions = {mv.version: mv.tags.get("modelgate.verdict") for mv in client.search_model_versions(f"name='{MODEL}'")}
    first = production["version"]
    rejected = [v for v, verdict in versions.items() if verdict == "rejected"]
    passed = sorted((v for v, verdict in versions.items() if verdict == "passed" and v != first), key=int)
    if not rejected or not passed:
        pytest.skip("needs the degraded and changed-evalset gates of this module to have run first")
    home = production["home"]
    proc = release_cmd(quality_team, mlflow_server, home, "approve", "--version", rejected[0], "--actor", "alice",
                       "--reason", "x", expect=5)
    assert "gate verdict is 'rejected'" in proc.stderr
    release_cmd(quality_team, mlflow_server, home, "promote", "--version", rejected[0], "--actor", "alice", expect=5)
    new = passed[-1]
    release_cmd(quality_team, mlflow_server, home, "approve", "--version", new, "--actor", "alice",
                "--reason", "report read")
    release_cmd(quality_team, mlflow_server, home, "promote", "--version", new, "--actor", "bob")
    assert client.get_model_version_by_alias(MODEL, "production").version == new
    assert client.get_model_version_by_alias(MODEL, "previous").version == first
    assert git(quality_team, "tag", "--list") == "\n".join(sorted([f"{MODEL}/v{first}", f"{MODEL}/v{new}"]))
    doc = json.loads(release_cmd(quality_team, mlflow_server, home, "resolve", "production", "--json").stdout)
    assert doc["repo"] and doc["revision"] == production["report"]["candidate"]["revision"]
    t0 = time.monotonic()
    release_cmd(quality_team, mlflow_server, home, "rollback", "--actor", "alice", "--reason", "drill")
    print(f"rollback: {time.monotonic() - t0:.1f} s")
    assert client.get_model_version_by_alias(MODEL, "production").version == first
    history = json.loads(release_cmd(quality_team, mlflow_server, home, "history", "--json").stdout)
    kinds = [e["event"] for e in history["events"]]
    assert kinds.count("gate") == len(versions) and kinds[-3:] == ["approve", "promote", "rollback"]
    gate_rows = [e for e in history["events"] if e["event"] == "gate"]
    assert all("format.pass_rate" in e["metrics"] for e in gate_rows)
