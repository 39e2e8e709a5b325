"""`modelgate gate` on the real stack: demo model from the local hub, real vLLM on CPU, real MLflow server."""

from __future__ import annotations

import json
import re
import signal

import pytest

from tests.support import cli
from tests.support.cli import gate_env
from tests.support.processes import vllm_processes
from tests.support.releases import write_demo_release
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def runs_of(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_gate_on_demo_pin_passes_and_is_recorded(demo_hub, mlflow_server, demo_gate, tmp_path):
    """The session's demo gate (tests/support/fixtures.py: serve and a small load test, shared with
    test_load_e2e.py: one boot for both)."""
    from mlflow.tracking import MlflowClient

    proc, model_home = demo_gate["proc"], demo_gate["home"]
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    revision = demo_hub["variants"]["instruct"]["revision"]
    served = f"chat@{revision[:12]}"
    assert re.search(r"^\s+fetch\s+passed\s+[\d.]+s", out, re.M)
    assert re.search(r"^\s+serve\s+passed\s+[\d.]+s", out, re.M)
    assert "verdict: PASSED (exit 0)" in out
    run_id = re.search(r"^mlflow run: ([0-9a-f]{32})$", out, re.M).group(1)
    assert "vLLM ready after" in proc.stderr  # start-up progress is shown

    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    params = run.data.params
    for name, digest in demo_hub["variants"]["instruct"]["files"].items():
        assert params[f"file_sha256.{name}"] == digest
    assert params["revision"] == revision and params["served_name"] == served and params["pr"] == "17"
    assert run.data.tags["modelgate.verdict"] == "passed"
    assert run.data.metrics["serve.probe_ttft_s"] > 0
    artifacts = {a.path for a in client.list_artifacts(run_id)} | \
        {a.path for a in client.list_artifacts(run_id, "stages/serve")}
    assert {"report.json", "report.md", "stages/serve/server.log"} <= artifacts
    local = client.download_artifacts(run_id, "report.json", str(tmp_path))
    report = json.loads(open(local).read())
    assert report["schema_version"] == 1 and report["served_name"] == served
    assert report["tracking"]["run_id"] == run_id
    assert report["candidate"]["files"] == demo_hub["variants"]["instruct"]["files"]
    log = open(client.download_artifacts(run_id, "stages/serve/server.log", str(tmp_path))).read()
    assert served in log  # every request log line names the model version
    assert vllm_processes(model_home) == []


def test_corrupt_weights_do_not_load_and_are_rejected_with_exit_1_and_the_log(demo_hub, mlflow_server, model_home,
                                                                               tmp_path):
    from mlflow.tracking import MlflowClient

    config = write_demo_release(tmp_path / "team", demo_hub, variant="corrupt")
    proc = cli.run_gate(config, mlflow_server, model_home, timeout=900)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr[-3000:]
    assert re.search(r"^\s+serve\s+failed\s", out, re.M)
    # the root exception of the traceback, not the last line of the log
    assert "does not load: safetensors._safetensors_rust.SafetensorError: Error while deserializing header" in out
    assert "decided by the server log" in out
    assert "last lines of the server log" in out
    for stage in ("format", "evals", "compare", "load"):
        assert re.search(rf"^\s+{stage}\s+skipped\s.*not run: stage serve failed", out, re.M), stage
    assert "verdict: REJECTED (exit 1)" in out
    run_id = re.search(r"^mlflow run: ([0-9a-f]{32})$", out, re.M).group(1)
    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.get_run(run_id).data.tags["modelgate.verdict"] == "rejected"
    log = open(client.download_artifacts(run_id, "stages/serve/server.log", str(tmp_path))).read()
    assert "SafetensorError" in log  # the evidence is in the run
    report = json.loads(open(client.download_artifacts(run_id, "report.json", str(tmp_path))).read())
    serve = next(s for s in report["stages"] if s["name"] == "serve")
    assert serve["details"]["load_failure"]["cause"] == "candidate"
    assert "SafetensorError" in serve["details"]["log_tail"]
    assert vllm_processes() == []


def test_tampered_lock_exits_2_without_touching_mlflow(demo_hub, mlflow_server, model_home, tmp_path):
    manifest = json.loads(json.dumps(demo_hub))
    files = manifest["variants"]["instruct"]["files"]
    files["config.json"] = "0" * 64
    config = write_demo_release(tmp_path / "team", manifest)
    before = len(runs_of(mlflow_server, "modelgate/smollm2-support-test"))
    proc = cli.run_gate(config, mlflow_server, model_home, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("modelgate: error: ") and str(config) in err and "candidate.files.config.json" in err
    assert "sha256 mismatch for 'config.json'" in err
    assert len(runs_of(mlflow_server, "modelgate/smollm2-support-test")) == before
    assert vllm_processes() == []


def test_sigint_during_server_start_exits_130_and_leaves_no_server(demo_hub, mlflow_server, model_home, tmp_path):
    config = write_demo_release(tmp_path / "team", demo_hub)
    run_dir = tmp_path / "run"
    gate = cli.start("gate", "--config", str(config), "--run-dir", str(run_dir),
                     env=gate_env(mlflow_server, model_home))
    gate.wait_for_line("starting vLLM", timeout_s=300)
    assert wait_for(vllm_processes, timeout_s=60), "".join(gate.err)
    # the server has begun to log (beyond the command line the gate writes first) and is not ready yet:
    # interrupt it while it starts, not before it exists
    log = run_dir / "server.log"
    assert wait_for(lambda: log.exists() and len(log.read_text(errors="replace").splitlines()) > 1,
                    timeout_s=120), "".join(gate.err)
    assert "vLLM ready after" not in "".join(gate.err)
    gate.proc.send_signal(signal.SIGINT)
    code, out, err = gate.finish(timeout_s=120)
    assert code == 130, out + err
    assert re.search(r"^\s+serve\s+interrupted", out, re.M)
    assert "verdict: INTERRUPTED (exit 130)" in out
    assert vllm_processes() == []


def test_pickle_variant_is_refused_with_exit_2(demo_hub, mlflow_server, model_home, tmp_path):
    config = write_demo_release(tmp_path / "team", demo_hub, variant="pickle")
    proc = cli.run_gate(config, mlflow_server, model_home, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("modelgate: error: ") and "candidate.files" in err and "pytorch_model.bin refused" in err
    assert vllm_processes() == []
