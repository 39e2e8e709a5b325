"""Session fixtures for the real stack: the demo model hub (built once, cached under .modelgate/), a real
`mlflow server` process on loopback, and helpers to run `modelgate` as a subprocess and to find vLLM
processes left behind."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO


@pytest.fixture(scope="session")
def demo_hub():
    """The demo hub's manifest: variant -> revision and file digests (idempotent: built once per machine)."""
    from pipeline.demo.hub import publish_demo_hub

    home = Path(os.environ.get("MODELGATE_HOME", REPO / ".modelgate"))
    return publish_demo_hub(home, progress=lambda m: print(f"[demo hub] {m}", file=sys.stderr))


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


# Every process this test session starts inherits this variable: the leftover checks look only at processes
# that carry it, so another checkout's tests (or a developer's server) on the same machine never count.
SESSION_MARK = f"MODELGATE_TEST_SESSION={os.getpid()}-{time.time_ns()}"
os.environ["MODELGATE_TEST_SESSION"] = SESSION_MARK.split("=", 1)[1]


def _ours(pid: str) -> bool:
    try:
        return SESSION_MARK.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


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
        if ("vllm.entrypoints.openai.api_server" in args or "VLLM::" in args) and _ours(entry.name):
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
