"""The serving-benchmark worker (tools/servebench.BenchWorker): vLLM's real benchmark module, imported once, runs
one job after another in the same process; a failing job is an InfraError naming the benchmark's own error and
leaves the worker serving the next; close() leaves no process behind. The endpoint is a loopback port nothing
listens on, so no vLLM server is needed (the load stage's e2e tests drive the worker against a real one)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pipeline.errors import InfraError
from pipeline.tools.servebench import BenchRequest, BenchWorker, run_level

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_one_worker_runs_every_job_and_names_each_failure(demo_hub, tmp_path):
    from pipeline.demo.hub import hf_cache_repo_dir

    snapshots = hf_cache_repo_dir(Path(demo_hub["hf_cache_dir"]), demo_hub["hf_repo_id"]) / "snapshots"
    tokenizer = next(p.parent for p in snapshots.glob("*/tokenizer.json"))  # the demo model's real tokenizer
    req = BenchRequest(f"http://127.0.0.1:{_closed_port()}", "chat@x", str(tokenizer), concurrency=1, num_prompts=1,
                       input_len=8, output_len=2, seed=0, request_timeout_s=5, api_key="sk-test-not-logged")
    log = tmp_path / "servebench.log"
    worker = BenchWorker(log).start()
    pid = worker.proc.pid
    try:
        for name in ("first", "second"):
            with pytest.raises(InfraError) as err:
                run_level(req, tmp_path, f"bench_{name}.json", log, worker)
            assert "Initial test run failed" in str(err.value), err.value
            assert worker.proc is not None and worker.proc.pid == pid and _alive(pid)  # the same process serves on
        text = log.read_text()
        assert text.count("$ ") == 2 and text.count("serving-benchmark worker ready") == 1
        assert "sk-test-not-logged" not in text
    finally:
        worker.close()
    assert not _alive(pid)
