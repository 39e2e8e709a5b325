"""`serving.port` already taken: the gate stops at serve with exit 3 naming host and port, before vLLM is
started (nothing to clean up), and the gate is recorded as an error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from tests.integration.test_bad_inputs import build_model_repo

pytestmark = pytest.mark.integration


def test_taken_port_is_exit_3_naming_it(tmp_path):
    revision, digests = build_model_repo(tmp_path / "hub" / "model", {})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "release.yaml"
        config.write_text(yaml.safe_dump({
            "schema_version": 1, "model": {"name": "port-test"},
            "candidate": {"source": "git", "repo": "hub/model", "revision": revision, "files": digests},
            "serving": {"port": port, "enforce_eager": True},
        }))
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
               "MODELGATE_HOME": str(tmp_path / "home")}
        proc = subprocess.run([sys.executable, "-m", "pipeline", "gate", "--config", str(config), "--run-dir",
                               str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    serve = next(s for s in report["stages"] if s["name"] == "serve")
    assert serve["status"] == "error"
    assert f"127.0.0.1:{port} (serving.port)" in serve["reasons"][0] and "in use" in serve["reasons"][0]
    assert "starting vLLM" not in proc.stderr
