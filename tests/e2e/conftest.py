"""Session fixtures for the real stack: the demo model hub (built once, cached under .modelgate/), a real
`mlflow server` process on loopback, and helpers to run `modelgate` as a subprocess and to find vLLM
processes left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.integrations.vllm_server import free_port
from tests.conftest import REPO

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def demo_hub():
    """The demo hub's manifest: variant -> revision and file digests (idempotent: built once per machine)."""
    from pipeline.demo.hub import publish_demo_hub

    home = Path(os.environ.get("MODELGATE_HOME", REPO / ".modelgate"))
    return publish_demo_hub(home, progress=lambda m: print(f"[demo hub] {m}", file=sys.stderr))


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (sqlite backend, proxied artifacts) on 127.0.0.1."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}: {(root / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("mlflow server did not start within 120 s")
        time.sleep(0.5)
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def write_demo_release(directory: Path, manifest: dict, variant: str = "instruct", **serving) -> Path:
    """A release.yaml pinning a demo hub variant, with test-sized serving settings."""
    directory.mkdir(parents=True, exist_ok=True)
    v = manifest["variants"][variant]
    data = {
        "schema_version": 1,
        "model": {"name": "smollm2-support-test"},
        "candidate": {"source": "git", "repo": manifest["repo_path"], "revision": v["revision"],
                      "files": v["files"]},
        "serving": {"enforce_eager": True, "max_model_len": 1024, "startup_timeout_s": 300,
                    "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}, **serving},
    }
    path = directory / "release.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def modelgate_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


_present_before_test: set[str] = set()


def _scan_vllm() -> dict[str, str]:
    """pid -> command line of live vLLM processes: the API server and its engine core / workers, which
    retitle themselves `VLLM::EngineCore`, `VLLM::Worker`. Read from /proc, not `ps`, whose `args` column
    may be cut to the terminal width (a long venv path pushed the module name out of it once)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # exited while we looked
            continue
        if state == "Z":  # an exited process its parent has not reaped yet: nothing runs, nothing held
            continue
        if "vllm.entrypoints.openai.api_server" in args or "VLLM::" in args:
            found[entry.name] = args
    return found


@pytest.fixture(autouse=True)
def _snapshot_vllm_processes():
    """vLLM processes that existed before the test (another developer's server, a module-scoped staging
    server) are not this test's leftovers."""
    _present_before_test.clear()
    _present_before_test.update(_scan_vllm())
    yield


def vllm_processes() -> list[str]:
    """vLLM processes started since the test began and still alive (there must be none after a gate)."""
    return [f"{pid} {args}" for pid, args in _scan_vllm().items() if pid not in _present_before_test]
