"""The fault matrix on the real stack (real vLLM on CPU, real MLflow server), one vLLM boot per case.

vLLM dies (SIGKILL) while the evals run and while the load test runs; vLLM does not become healthy within
`serving.startup_timeout_s`; SIGTERM during the format checks, SIGINT during the evals, SIGTERM during the
load test. Every case asserts the exit code, the message, the report kept in the run directory, what MLflow
holds (a run marked `error`, or no run at all for an interrupted gate), that no stage after the fault is
`passed`, and that no vLLM process (nor lm-eval or benchmark helper) is left.

The cheap matrix (every stage x SIGINT/SIGTERM with stand-in stages, full disk, unwritable run directory,
hanging endpoint, taken port) is tests/integration/test_faults.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.conftest import modelgate_cmd, vllm_processes, write_demo_release
from tests.e2e.test_gate_e2e import gate_env
from tests.e2e.test_load_e2e import our_vllm_processes

pytestmark = pytest.mark.e2e
MODEL = "smollm2-faults-test"
STAGES = ["fetch", "serve", "format", "evals", "compare", "load"]
SMALL_LOAD = {"peak_concurrency": 1, "levels": [1], "prompts": {"requests_per_concurrency": 2}}


@pytest.fixture(scope="module")
def model_home(tmp_path_factory):
    return tmp_path_factory.mktemp("modelgate-home")


def release(team: Path, manifest, gates, **serving) -> Path:
    """release.yaml for the demo pin with `gates`; the prompt suites and evalsets they name copied beside it."""
    path = write_demo_release(team, manifest, **serving)
    data = yaml.safe_load(path.read_text())
    data["model"]["name"] = MODEL
    data["gates"] = gates
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if "format" in gates:
        shutil.copytree(REPO / "prompts", team / "prompts", ignore=shutil.ignore_patterns("README.md"))
    if "evals" in gates:
        shutil.copytree(REPO / "evalsets", team / "evalsets", ignore=shutil.ignore_patterns("__pycache__"))
    return path


def our_processes(home) -> list[str]:
    """Every process a gate of this test started (vLLM, lm-eval, the serving benchmark): their environment
    carries the test's MODELGATE_HOME."""
    marker = f"MODELGATE_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z":
            found.append(f"{entry.name} {args[:200]}")
    return found


def no_processes_left(home, within_s: float = 20.0) -> list[str]:
    deadline = time.monotonic() + within_s
    while (left := our_processes(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


class Gate:
    """`modelgate gate` as a subprocess whose stderr progress lines are read until a marker shows up."""

    def __init__(self, config: Path, mlflow_uri: str, home, run_dir: Path):
        self.run_dir = run_dir
        self.proc = subprocess.Popen(modelgate_cmd("gate", "--config", str(config), "--run-dir", str(run_dir)),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=gate_env(mlflow_uri, home))
        self.seen: list[str] = []

    def wait_for(self, *markers: str, timeout_s: float = 600) -> None:
        """Read progress lines until each marker has been seen, in order."""
        deadline = time.monotonic() + timeout_s
        for marker in markers:
            for line in self.proc.stderr:
                self.seen.append(line)
                if marker in line or time.monotonic() > deadline:
                    break
            assert any(marker in line for line in self.seen), f"never saw {marker!r}:\n" + "".join(self.seen)

    def finish(self, timeout_s: float = 600) -> tuple[int, str, str, dict]:
        out, err = self.proc.communicate(timeout=timeout_s)
        report = json.loads((self.run_dir / "report.json").read_text())  # kept locally in every case
        return self.proc.returncode, out, "".join(self.seen) + err, report


def the_server(home) -> int:
    servers = [line for line in our_vllm_processes(home) if "vllm.entrypoints.openai.api_server" in line]
    assert len(servers) == 1, servers
    return int(servers[0].split()[0])


def statuses(report) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["stages"]}


def stage_of(report, name):
    return next(s for s in report["stages"] if s["name"] == name)


def mlflow_runs_of(mlflow_uri, report):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name(f"modelgate/{MODEL}")
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`modelgate.gate_id` = '{report['gate_id']}'")


def assert_server_death(code, out, err, report, stage, mlflow_uri, home):
    """exit 3; `stage` error saying vLLM died, with the server log tail; later stages skipped; nothing after
    the fault passed; the run recorded as error (FAILED); no process left."""
    assert code == 3, out + err[-3000:]
    failed = stage_of(report, stage)
    assert failed["status"] == "error", failed
    assert re.search(r"vLLM died with exit code -9\b", failed["reasons"][0]), failed["reasons"]
    assert failed["details"].get("log_tail"), "the server log tail belongs in the report"
    assert failed["artifacts"].get("server.log")
    assert f"--- {stage}: last lines of the server log ---" in out
    i = STAGES.index(stage)
    assert all(statuses(report)[n] == "skipped" for n in STAGES[i + 1:]), statuses(report)
    assert report["verdict"] == "error" and report["exit_code"] == 3 and "verdict: ERROR (exit 3)" in out
    runs = mlflow_runs_of(mlflow_uri, report)
    assert [r.info.run_id for r in runs] == [report["tracking"]["run_id"]]
    assert runs[0].data.tags["modelgate.verdict"] == "error" and runs[0].info.status == "FAILED"
    assert no_processes_left(home) == []
    assert our_vllm_processes(home) == [] and vllm_processes() == []


def assert_interrupted(code, out, err, report, stage, signame, mlflow_uri, home):
    """exit 130; `stage` interrupted, earlier ones as they were, later ones skipped; not in MLflow; no process."""
    assert code == 130, out + err[-3000:]
    assert stage_of(report, stage)["status"] == "interrupted"
    assert stage_of(report, stage)["reasons"] == [f"interrupted by {signame}"]
    i = STAGES.index(stage)
    assert all(statuses(report)[n] in ("passed", "skipped") for n in STAGES[:i]), statuses(report)
    assert all(statuses(report)[n] == "skipped" for n in STAGES[i + 1:]), statuses(report)
    assert report["verdict"] == "interrupted" and report["exit_code"] == 130
    assert "verdict: INTERRUPTED (exit 130)" in out and "mlflow run: (not recorded)" in out
    assert mlflow_runs_of(mlflow_uri, report) == []  # never recorded, so never promotable
    assert no_processes_left(home) == []
    assert our_vllm_processes(home) == [] and vllm_processes() == []


# ---------------------------------------------------------------- vLLM dies mid-stage


def test_server_killed_during_evals(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"evals": {"tasks": ["support_intent", "support_facts"], "num_concurrent": 2, "limit": 60,
                       "metrics": {"support_intent/acc": {"floor": 0.1}}}, "load": SMALL_LOAD}
    gate = Gate(release(tmp_path / "team", demo_hub, gates), mlflow_server, model_home, tmp_path / "run")
    gate.wait_for("evals: started", "lm-eval:")
    time.sleep(3)
    os.kill(the_server(model_home), signal.SIGKILL)
    code, out, err, report = gate.finish()
    assert_server_death(code, out, err, report, "evals", mlflow_server, model_home)
    assert statuses(report)["serve"] == "passed"


def test_server_killed_during_the_load_test(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"load": {"peak_concurrency": 2, "levels": [1, 2],
                      "prompts": {"input_len": 64, "output_len": 256, "requests_per_concurrency": 6}}}
    gate = Gate(release(tmp_path / "team", demo_hub, gates), mlflow_server, model_home, tmp_path / "run")
    gate.wait_for("load: started", "load: level")
    time.sleep(4)
    os.kill(the_server(model_home), signal.SIGKILL)
    code, out, err, report = gate.finish()
    assert_server_death(code, out, err, report, "load", mlflow_server, model_home)


# ---------------------------------------------------------------- vLLM does not start


def test_startup_timeout_is_exit_3_names_the_timeout_and_kills_the_server(demo_hub, mlflow_server, model_home,
                                                                          tmp_path):
    config = release(tmp_path / "team", demo_hub, {"load": SMALL_LOAD}, startup_timeout_s=3)
    t0 = time.monotonic()
    gate = Gate(config, mlflow_server, model_home, tmp_path / "run")
    gate.wait_for("starting vLLM")
    code, out, err, report = gate.finish(timeout_s=300)
    took = time.monotonic() - t0
    assert code == 3, out + err[-3000:]
    serve = stage_of(report, "serve")
    assert serve["status"] == "error"
    assert "vLLM did not become healthy within 3s (serving.startup_timeout_s)" in serve["reasons"][0]
    assert "stopping vLLM" in err  # it was still starting: killed, not abandoned
    assert statuses(report)["load"] == "skipped" and report["verdict"] == "error"
    assert took < 120, f"a 3 s startup timeout took {took:.0f} s to fail"
    runs = mlflow_runs_of(mlflow_server, report)
    assert len(runs) == 1 and runs[0].data.tags["modelgate.verdict"] == "error" and runs[0].info.status == "FAILED"
    assert no_processes_left(model_home) == []
    assert our_vllm_processes(model_home) == [] and vllm_processes() == []
    # corrupt weights and a taken serving.port: test_gate_e2e.py and tests/integration/test_faults.py


# ---------------------------------------------------------------- SIGINT / SIGTERM mid-stage


def test_sigterm_during_format(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"format": {"concurrency": 2, "pass_rate": {"floor": 0.1}}, "load": SMALL_LOAD}
    gate = Gate(release(tmp_path / "team", demo_hub, gates), mlflow_server, model_home, tmp_path / "run")
    gate.wait_for("format: started", "case(s) from")
    time.sleep(2)
    gate.proc.send_signal(signal.SIGTERM)
    code, out, err, report = gate.finish(timeout_s=180)
    assert_interrupted(code, out, err, report, "format", "SIGTERM", mlflow_server, model_home)


def test_sigint_during_evals(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"evals": {"tasks": ["support_intent"], "num_concurrent": 2, "limit": 60}, "load": SMALL_LOAD}
    gate = Gate(release(tmp_path / "team", demo_hub, gates), mlflow_server, model_home, tmp_path / "run")
    gate.wait_for("evals: started", "lm-eval:")
    time.sleep(3)  # lm-eval is running: it must go with the server
    assert any("lm_eval" in p for p in our_processes(model_home)), our_processes(model_home)
    gate.proc.send_signal(signal.SIGINT)
    code, out, err, report = gate.finish(timeout_s=180)
    assert_interrupted(code, out, err, report, "evals", "SIGINT", mlflow_server, model_home)


def test_sigterm_during_the_load_test(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"load": {"peak_concurrency": 2, "levels": [1, 2],
                      "prompts": {"input_len": 64, "output_len": 256, "requests_per_concurrency": 6}}}
    gate = Gate(release(tmp_path / "team", demo_hub, gates), mlflow_server, model_home, tmp_path / "run")
    gate.wait_for("load: started", "load: level")
    time.sleep(4)  # the serving benchmark is running: it must go with the server
    gate.proc.send_signal(signal.SIGTERM)
    code, out, err, report = gate.finish(timeout_s=180)
    assert_interrupted(code, out, err, report, "load", "SIGTERM", mlflow_server, model_home)
