"""Faults of the real vLLM server: killed while the evals run, killed while the load test runs, too slow to
start. Each gate must end with exit 3, the stage in `error` saying what happened, later stages skipped,
the report kept, the MLflow run marked `error` (fails closed), and no vLLM process left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest
import yaml

from tests.e2e.conftest import modelgate_cmd, write_demo_release
from tests.e2e.test_gate_e2e import gate_env
from tests.e2e.test_load_e2e import our_vllm_processes

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model_home(tmp_path_factory):
    return tmp_path_factory.mktemp("modelgate-home")


def release(directory, manifest, gates, **serving):
    path = write_demo_release(directory, manifest, **serving)
    data = yaml.safe_load(path.read_text())
    data["model"]["name"] = "smollm2-faults-test"
    data["gates"] = gates
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def kill_server_during(stage, config, mlflow_uri, home, tmp_path):
    """Run a gate; once `stage` has started (and worked a few seconds), SIGKILL the vLLM API server."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(modelgate_cmd("gate", "--config", str(config), "--run-dir", str(run_dir)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=gate_env(mlflow_uri, home))
    seen = []
    deadline = time.monotonic() + 600
    for line in proc.stderr:
        seen.append(line)
        if f"{stage}: started" in line or time.monotonic() > deadline:
            break
    assert any(f"{stage}: started" in line for line in seen), "".join(seen)
    time.sleep(4)
    servers = [line for line in our_vllm_processes(home) if "vllm.entrypoints.openai.api_server" in line]
    assert len(servers) == 1, servers
    os.kill(int(servers[0].split()[0]), signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    report = json.loads((run_dir / "report.json").read_text())
    return proc.returncode, out, "".join(seen) + err, report


def stage_of(report, name):
    return next(s for s in report["stages"] if s["name"] == name)


def gate_run_verdict(mlflow_uri, report):
    from mlflow.tracking import MlflowClient

    run_id = report["tracking"]["run_id"]
    return MlflowClient(tracking_uri=mlflow_uri).get_run(run_id).data.tags["modelgate.verdict"]


def test_server_killed_during_evals(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"evals": {"tasks": ["support_intent", "support_facts"], "num_concurrent": 2, "limit": 60,
                       "metrics": {"support_intent/acc": {"floor": 0.1}}},
             "load": {"peak_concurrency": 1, "levels": [1], "prompts": {"requests_per_concurrency": 2}}}
    team = tmp_path / "team"
    import shutil

    from tests.conftest import REPO

    shutil.copytree(REPO / "evalsets", team / "evalsets", ignore=shutil.ignore_patterns("__pycache__"))
    config = release(team, demo_hub, gates)
    code, out, err, report = kill_server_during("evals", config, mlflow_server, model_home, tmp_path)
    assert code == 3, out + err[-3000:]
    evals = stage_of(report, "evals")
    assert evals["status"] == "error", evals
    assert re.search(r"server|died|exited|connect", " ".join(evals["reasons"]), re.I), evals["reasons"]
    assert stage_of(report, "load")["status"] == "skipped"
    assert report["verdict"] == "error" and "verdict: ERROR (exit 3)" in out
    assert gate_run_verdict(mlflow_server, report) == "error"
    assert our_vllm_processes(model_home) == []


def test_server_killed_during_the_load_test(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"load": {"peak_concurrency": 2, "levels": [1, 2],
                      "prompts": {"input_len": 64, "output_len": 256, "requests_per_concurrency": 6}}}
    config = release(tmp_path / "team", demo_hub, gates)
    code, out, err, report = kill_server_during("load", config, mlflow_server, model_home, tmp_path)
    assert code == 3, out + err[-3000:]
    load = stage_of(report, "load")
    assert load["status"] == "error", load
    assert report["verdict"] == "error"
    assert gate_run_verdict(mlflow_server, report) == "error"
    assert our_vllm_processes(model_home) == []


def test_startup_timeout_is_exit_3_and_leaves_no_server(demo_hub, mlflow_server, model_home, tmp_path):
    config = release(tmp_path / "team", demo_hub, {"load": {"peak_concurrency": 1, "levels": [1]}},
                     startup_timeout_s=3)
    t0 = time.monotonic()
    proc = subprocess.run(modelgate_cmd("gate", "--config", str(config)), capture_output=True, text=True,
                          env=gate_env(mlflow_server, model_home), timeout=300)
    took = time.monotonic() - t0
    assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]
    assert re.search(r"^\s+serve\s+error", proc.stdout, re.M)
    assert re.search(r"3(\.0)? ?s", proc.stdout) and "start" in proc.stdout.lower()
    assert re.search(r"^\s+load\s+skipped", proc.stdout, re.M)
    assert took < 120, f"a 3 s startup timeout took {took:.0f} s to fail"
    assert our_vllm_processes(model_home) == []
