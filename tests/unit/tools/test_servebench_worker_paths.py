"""BenchWorker's failure paths with a stand-in worker process (the real module's jobs are exercised in
tests/integration/test_servebench_worker.py and the load e2e tests): a worker that dies mid-job is an InfraError
naming its last error line, one killed by SIGTERM/SIGINT is an interruption, a job that hangs past its timeout
stops the worker's whole process group, and the next level starts a fresh worker."""

from __future__ import annotations

import os
import time

import pytest

from pipeline.errors import InfraError, Interrupted
from pipeline.tools import servebench
from pipeline.tools.servebench import BenchRequest, BenchWorker

# speaks the worker's protocol; what a job does is chosen by its result file's name
_FAKE_WORKER = """
import json, os, signal, subprocess, sys, time
print('modelgate: serving-benchmark worker ready', flush=True)
for line in sys.stdin:
    job = json.loads(line)
    argv = job['argv']
    name = argv[argv.index('--result-filename') + 1]
    out = os.path.join(argv[argv.index('--result-dir') + 1], name)
    if name.startswith('die'):
        print('Traceback (most recent call last):', flush=True)
        print('RuntimeError: the benchmark fell over', flush=True)
        os._exit(7)
    if name.startswith('term'):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    if name.startswith('hang'):
        child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])
        open(out + '.pids', 'w').write(f'{os.getpid()} {child.pid}')
        time.sleep(300)
    with open(out, 'w') as f:
        json.dump({'completed': 2, 'failed': 0, 'key_seen': job['env'].get('OPENAI_API_KEY') == 'sk-fake'}, f)
    with open(job['done'] + '.tmp', 'w') as f:
        f.write('0')
    os.replace(job['done'] + '.tmp', job['done'])
"""


@pytest.fixture
def fake_worker(monkeypatch):
    monkeypatch.setattr(servebench, "_SNIPPET", _FAKE_WORKER)


def _req() -> BenchRequest:
    return BenchRequest("http://127.0.0.1:9", "m", "t", concurrency=1, num_prompts=2, input_len=8, output_len=2,
                        seed=0, request_timeout_s=5, api_key="sk-fake")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_worker_that_dies_mid_job_is_an_infra_error_naming_its_last_error_and_the_next_level_gets_a_new_one(
        fake_worker, tmp_path):
    worker = BenchWorker(tmp_path / "servebench.log")
    try:
        assert worker.level(_req(), tmp_path, "ok1.json") == {"completed": 2, "failed": 0, "key_seen": True}
        first = worker.proc.pid
        with pytest.raises(InfraError, match=r"exited with code 7 at concurrency 1 .*RuntimeError: the benchmark "
                                             r"fell over"):
            worker.level(_req(), tmp_path, "die.json")
        assert worker.proc is None and not _alive(first)
        assert worker.level(_req(), tmp_path, "ok2.json")["completed"] == 2
        assert worker.proc.pid != first
    finally:
        worker.close()


def test_a_worker_stopped_by_a_signal_is_an_interruption_not_a_benchmark_failure(fake_worker, tmp_path):
    worker = BenchWorker(tmp_path / "servebench.log")
    try:
        with pytest.raises(Interrupted):
            worker.level(_req(), tmp_path, "term.json")
        assert worker.proc is None
    finally:
        worker.close()


def test_a_hanging_job_times_out_and_stops_the_workers_whole_process_group(fake_worker, tmp_path, monkeypatch):
    monkeypatch.setattr(servebench, "timeout_for", lambda req: 1.0)
    worker = BenchWorker(tmp_path / "servebench.log")
    started = time.monotonic()
    with pytest.raises(InfraError, match=r"the serving benchmark at concurrency 1 did not finish within 1 s"):
        worker.level(_req(), tmp_path, "hang.json")
    assert time.monotonic() - started < 30
    pids = [int(p) for p in (tmp_path / "hang.json.pids").read_text().split()]
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker.proc is None and not any(_alive(p) for p in pids), pids
    worker.close()  # closing again is harmless


def test_ctrl_c_while_a_job_runs_stops_the_worker_before_unwinding(fake_worker, tmp_path, monkeypatch):
    real_sleep, pids_file, raised = time.sleep, tmp_path / "hang.json.pids", []

    def interrupting_sleep(s):
        if pids_file.exists() and not raised:  # the job and its child are running: the user presses Ctrl-C
            raised.append(True)
            raise KeyboardInterrupt
        real_sleep(s)

    worker = BenchWorker(tmp_path / "servebench.log")
    monkeypatch.setattr(servebench.time, "sleep", interrupting_sleep)
    with pytest.raises(KeyboardInterrupt):
        worker.level(_req(), tmp_path, "hang.json")
    monkeypatch.setattr(servebench.time, "sleep", real_sleep)
    pids = [int(p) for p in pids_file.read_text().split()]
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        real_sleep(0.1)
    assert worker.proc is None and not any(_alive(p) for p in pids)
