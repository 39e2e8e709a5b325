"""A real `mlflow server` process on 127.0.0.1 (sqlite backend, proxied artifacts) for tests: fixed port and
store, so a test can stop it and start it again as the same server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipeline.serving.vllm_server import free_port
from pipeline.util.procgroup import stop_group

# MLflow 3's server starts a job runner with seven Huey consumer processes (GenAI judge jobs) unless told not to:
# nothing here uses jobs, and each consumer imports MLflow (seconds of CPU at every server start)
NO_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

VENV_BIN = Path(sys.executable).parent


def wait_healthy(proc: subprocess.Popen, uri: str, log: Path, what: str, deadline_s: float) -> None:
    """Until `uri`/health answers 200. pytest.fail with the log's tail when `proc` exits first, or when the
    deadline passes (`proc` is stopped then)."""
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_server(proc)
            pytest.fail(f"{what} not healthy within {deadline_s:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (started with start_new_session), SIGKILL after 20 s."""
    stop_group(proc, 20, first=signal.SIGTERM)


class MlflowServer:
    """A real tracking server on a fixed port and store, so it can go away and come back as the same server."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **NO_JOB_RUNNER})
        wait_healthy(self.proc, self.uri, self.root / "server.log", "mlflow server", 120)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_server(proc)
