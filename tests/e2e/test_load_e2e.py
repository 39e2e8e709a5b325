"""The load stage on the real stack: vLLM on CPU driven by vLLM's serving benchmark, results in MLflow. (A gate
whose load SLO cannot be met: test_external_endpoint.py, on that module's server, with no boot of its own.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.processes import vllm_processes

pytestmark = pytest.mark.e2e


def test_load_stage_passes_and_lands_in_mlflow(mlflow_server, demo_gate, tmp_path):
    """The load stage of the session's demo gate (tests/support/fixtures.py, shared with test_gate_e2e.py)."""
    from mlflow.tracking import MlflowClient

    proc, model_home = demo_gate["proc"], demo_gate["home"]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert re.search(r"^\s+load\s+passed\s", proc.stdout, re.M)
    assert proc.stderr.count("starting vLLM") == 1  # the load test reuses the gate's one server
    run_id = re.search(r"^mlflow run: ([0-9a-f]{32})$", proc.stdout, re.M).group(1)
    client = MlflowClient(tracking_uri=mlflow_server)
    metrics = client.get_run(run_id).data.metrics
    for level in ("1x", "2x"):
        assert metrics[f"load.{level}.p95_e2el_ms"] > 0 and metrics[f"load.{level}.output_throughput"] > 0
        assert metrics[f"load.{level}.completed"] == 4 and metrics[f"load.{level}.failed"] == 0
        assert metrics[f"load.{level}.goodput"] > 0 and metrics[f"load.{level}.good_fraction"] == 1  # generous SLOs
    assert metrics["load.cost_per_1m_output_tokens"] > 0
    artifacts = {a.path for a in client.list_artifacts(run_id, "stages/load")}
    assert {"stages/load/latency_vs_concurrency.png", "stages/load/bench_1x.json",
            "stages/load/bench_2x.json"} <= artifacts
    png = client.download_artifacts(run_id, "stages/load/latency_vs_concurrency.png", str(tmp_path))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    report = json.loads(open(client.download_artifacts(run_id, "report.json", str(tmp_path))).read())
    load = next(s for s in report["stages"] if s["name"] == "load")
    assert [lvl["concurrency"] for lvl in load["details"]["levels"]] == [1, 2]
    # both levels ran on one serving-benchmark worker (vLLM's benchmark imported once, started with the format stage)
    log = (Path(report["run_dir"]) / "load" / "servebench.log").read_text()
    assert log.count("serving-benchmark worker ready") == 1
    assert sum(1 for line in log.splitlines() if line.startswith("$ ")) == 2
    assert load["details"]["curve"]["shape"] in ("gradual", "cliff")
    assert load["details"]["levels"][0]["server"]["scrapes"] >= 1
    # every completed request's latency is kept for the next gate's per-request comparison
    samples = load["details"]["levels"][1]["samples"]
    assert len(samples["e2el_ms"]) == len(samples["ttft_ms"]) == 4 and samples["output_tokens"] == [16] * 4
    fingerprint = load["details"]["fingerprint"]
    assert fingerprint["cpu_count"] >= 1
    # the serving configuration is read from the server's real command line and environment
    assert fingerprint["serving"]["enforce_eager"] is True and fingerprint["serving"]["max_model_len"] == "1024"
    assert fingerprint["serving"]["env"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert vllm_processes(model_home) == []
