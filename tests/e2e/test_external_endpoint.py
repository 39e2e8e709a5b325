"""`serving.mode: external`: the gate uses an already running OpenAI-compatible endpoint (a staging
deployment) instead of spawning vLLM. Here that endpoint is a real vLLM server started once for the module."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from pipeline.config import Serving
from pipeline.fetch import fetch
from pipeline.config import Pin
from pipeline.integrations.vllm_server import VllmServer
from tests.e2e.conftest import modelgate_cmd, write_demo_release
from tests.e2e.test_gate_e2e import gate_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def staging(demo_hub, tmp_path_factory):
    """A running vLLM server for the demo pin, served under the name the gate expects (chat@<rev12>)."""
    v = demo_hub["variants"]["instruct"]
    pin = Pin("git", demo_hub["repo_path"], v["revision"], v["files"])
    home = tmp_path_factory.mktemp("staging")
    model_dir = fetch(pin, demo_hub["repo_path"], home, file="staging", progress=lambda m: None)
    serving = Serving(enforce_eager=True, max_model_len=1024, startup_timeout_s=300,
                      env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    with VllmServer(model_dir.path, f"chat@{pin.short}", serving, home / "server.log",
                    progress=lambda m: None) as endpoint:
        yield endpoint


def external_release(directory, demo_hub, url, prefix="chat"):
    path = write_demo_release(directory, demo_hub, mode="external", external_url=url)
    data = yaml.safe_load(path.read_text())
    data["model"]["served_name_prefix"] = prefix
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_external_endpoint_is_probed_not_spawned(staging, demo_hub, mlflow_server, tmp_path):
    config = external_release(tmp_path / "team", demo_hub, staging.base_url + "/v1")
    proc = subprocess.run(modelgate_cmd("gate", "--config", str(config)), capture_output=True, text=True,
                          env=gate_env(mlflow_server, tmp_path / "home"), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "starting vLLM" not in proc.stderr
    assert "streamed TTFT" in proc.stderr
    assert staging.served_name in proc.stdout


def test_external_endpoint_serving_another_model_is_an_infra_error(staging, demo_hub, mlflow_server, tmp_path):
    config = external_release(tmp_path / "team", demo_hub, staging.base_url, prefix="other")
    proc = subprocess.run(modelgate_cmd("gate", "--config", str(config)), capture_output=True, text=True,
                          env=gate_env(mlflow_server, tmp_path / "home"), timeout=600)
    assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]
    assert f"the server does not serve 'other@" in proc.stdout and staging.served_name in proc.stdout
