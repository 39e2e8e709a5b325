"""The fault matrix without vLLM: SIGINT and SIGTERM during every stage, a full disk, an unwritable run
directory. The real gate code runs (CLI, runner, report, record) with stand-in stages: the one under test
blocks until signalled; the `serve` stand-in starts a child process torn down through `ctx.cleanup`, as the
vLLM server is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.gate import STAGES
from tests.conftest import VALID_RELEASE

pytestmark = pytest.mark.integration
STAGE_NAMES = [name for name, _ in STAGES]

HARNESS = """
import functools, os, subprocess, sys, time
from pipeline import cli, gate
from pipeline.procgroup import stop_group
from pipeline.result import Status, StageResult
target, pidfile, mode = sys.argv[1], sys.argv[2], sys.argv[3]

def make(name):
    def run(ctx):
        if name == "serve":
            proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
            ctx.cleanup.callback(stop_group, proc, 5)
            open(pidfile, "w").write(str(proc.pid))
        if name == target and mode == "block":
            print("BLOCKING in " + name, file=sys.stderr, flush=True)
            time.sleep(600)
        if name == target and mode == "write":
            (ctx.run_dir / name).mkdir(parents=True, exist_ok=True)
            (ctx.run_dir / name / "big.bin").write_bytes(b"x" * 4_000_000)
        return StageResult(name, Status.PASSED, metrics={"ok": 1.0})
    return run

gate.run_gate = functools.partial(gate.run_gate, stages=tuple((n, make(n)) for n, _ in gate.STAGES))
sys.exit(cli.main(sys.argv[4:]))
"""


def start(tmp_path, target, mode, run_dir):
    config = tmp_path / "release.yaml"
    config.write_text(yaml.safe_dump(VALID_RELEASE))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    pidfile = tmp_path / "child.pid"
    proc = subprocess.Popen([sys.executable, "-c", HARNESS, target, str(pidfile), mode, "gate", "--config", str(config),
                             "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    return proc, uri, pidfile


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def recorded_runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps) if exps else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("target", STAGE_NAMES)
def test_signal_during_a_stage_exits_130_marks_it_interrupted_and_tears_down(tmp_path, target, sig):
    run_dir = tmp_path / "run"
    proc, uri, pidfile = start(tmp_path, target, "block", run_dir)
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        seen.append(line)
        if f"BLOCKING in {target}" in line or time.monotonic() > deadline:
            break
    assert any(f"BLOCKING in {target}" in line for line in seen), "".join(seen)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "verdict: INTERRUPTED (exit 130)" in out
    report = json.loads((run_dir / "report.json").read_text())
    status = {s["name"]: s["status"] for s in report["stages"]}
    i = STAGE_NAMES.index(target)
    assert report["verdict"] == "interrupted" and status[target] == "interrupted"
    assert all(status[n] == "passed" for n in STAGE_NAMES[:i]) and all(status[n] == "skipped" for n in STAGE_NAMES[i + 1:])
    assert recorded_runs(uri) == []  # an interrupted gate is never recorded, so it can never be promoted
    if pidfile.exists():  # the stand-in server started: it must be gone
        pid = int(pidfile.read_text())
        for _ in range(50):
            if not alive(pid):
                break
            time.sleep(0.1)
        assert not alive(pid), f"the serve stage's child {pid} survived {sig.name}"


def test_unwritable_run_dir_is_exit_3_and_names_the_path(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the run directory should go")
    proc, uri, _ = start(tmp_path, "none", "pass", blocker / "run")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("modelgate: InfraError:") and str(blocker / "run") in last and "Not a directory" in last
    assert recorded_runs(uri) == []


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_fails_closed_with_exit_3(tmp_path, tiny_disk):
    proc, uri, _ = start(tmp_path, "format", "write", tiny_disk / "run")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, out + err
    assert "No space left on device" in out + err
    assert "Traceback" not in err
    assert not any(r.data.tags.get("modelgate.verdict") == "passed" for r in recorded_runs(uri))
