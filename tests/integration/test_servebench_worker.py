"""The serving-benchmark worker (tools/servebench.BenchWorker): vLLM's real benchmark module, imported once, runs
one job after another in the same process; a crashing job is an InfraError naming the benchmark's own error and
leaves the worker serving the next; close() leaves no process behind. The endpoint is a loopback port nothing
listens on, so no vLLM server is needed (the load stage's e2e tests drive the worker against a real one)."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest

from pipeline.errors import InfraError
from pipeline.tools.servebench import BenchRequest, BenchWorker

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
    req = BenchRequest(f"http://127.0.0.1:{_closed_port()}", "chat@x", str(tokenizer), concurrency=1, num_prompts=2,
                       input_len=8, output_len=2, seed=0, request_timeout_s=5, api_key="sk-test-not-logged")
    broken = dataclasses.replace(req, tokenizer=str(tmp_path / "no-such-tokenizer"))
    log = tmp_path / "servebench.log"
    worker = BenchWorker(log).start()
    pid = worker.proc.pid
    try:
        # every request refused: the benchmark itself completes and reports it (the load stage judges that)
        first = worker.level(req, tmp_path, "bench_first.json")
        assert first["completed"] == 0 and first["failed"] == 2, first
        # the benchmark crashes (no tokenizer there): an InfraError naming its own error; the worker serves on
        with pytest.raises(InfraError, match=r"the serving benchmark exited with code 1 at concurrency 1 .*Error"):
            worker.level(broken, tmp_path, "bench_broken.json")
        assert worker.proc is not None and worker.proc.pid == pid and _alive(pid)
        again = worker.level(req, tmp_path, "bench_again.json")
        assert again["failed"] == 2 and worker.proc.pid == pid
        text = log.read_text()
        assert text.count("$ ") == 3 and text.count("serving-benchmark worker ready") == 1
        assert "sk-test-not-logged" not in text
    finally:
        worker.close()
    assert not _alive(pid)
