"""The fault matrix on the real stack (real vLLM on CPU, real MLflow server), one vLLM boot per case.

vLLM dies (SIGKILL) while the evals run and while the load test runs; vLLM does not become healthy within
`serving.startup_timeout_s`; SIGINT during the evals (lm-eval running), SIGTERM during the load test (the
serving benchmark running). Every case asserts the exit code, the message, the report kept in the run
directory, what MLflow holds (a run marked `error`, or no run at all for an interrupted gate), that no stage
after the fault is `passed`, and that no vLLM process (nor lm-eval or benchmark helper) is left.

The cheap matrix (every stage x SIGINT/SIGTERM with stand-in stages, a signal the kernel hands a busy worker
thread, full disk, unwritable run directory, hanging endpoint, taken port) is tests/integration/test_faults.py;
the format stage, whose only child is the server, is covered there and by the two real-server cases here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.processes import gate_processes, scan, vllm_processes
from tests.support.releases import copy_project_inputs, write_demo_release
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
MODEL = "smollm2-faults-test"
STAGES = ["fetch", "serve", "format", "evals", "compare", "load"]
SMALL_LOAD = {"peak_concurrency": 1, "levels": [1], "prompts": {"requests_per_concurrency": 2}}


def release(team: Path, manifest, gates, **serving) -> Path:
    """release.yaml for the demo pin with `gates`; the prompt suites and evalsets they name copied beside it."""
    path = write_demo_release(team, manifest, model=MODEL, gates=gates, serving=serving)
    copy_project_inputs(team, *[name for gate, name in (("format", "prompts"), ("evals", "evalsets")) if gate in gates])
    return path


def no_processes_left(home, within_s: float = 20.0) -> list[str]:
    """The gate's processes still alive after waiting up to `within_s` for them to go."""
    wait_for(lambda: not gate_processes(home), within_s)
    return gate_processes(home)


class Gate:
    """`modelgate gate` as a child whose stderr progress lines are read as they come (see waiting.Watched)."""

    def __init__(self, config: Path, mlflow_uri: str, home, run_dir: Path):
        self.run_dir = run_dir
        self.home = home
        self.watched = cli.start("gate", "--config", str(config), "--run-dir", str(run_dir),
                                 env=cli.gate_env(mlflow_uri, home))
        self.proc = self.watched.proc

    def wait_for(self, *markers: str, timeout_s: float = 600) -> None:
        """Wait until progress lines hold each marker, in order."""
        self.watched.wait_for_line(*markers, timeout_s=timeout_s)

    def wait_for_process(self, mark: str, timeout_s: float = 120) -> None:
        """Wait until one of the gate's processes has `mark` in its whole command line (lm_eval, the benchmark,
        whose `python -c` prelude is long); at the deadline the gate is stopped and the test fails."""
        def running() -> bool:
            return any(mark in args for args in scan(MODELGATE_HOME=str(self.home)).values())

        if not wait_for(running, timeout_s):
            self.watched.give_up(f"no {mark} process within {timeout_s} s: {gate_processes(self.home)}")

    def finish(self, timeout_s: float = 600) -> tuple[int, str, str, dict]:
        code, out, err = self.watched.finish(timeout_s)
        report = json.loads((self.run_dir / "report.json").read_text())  # kept locally in every case
        return code, out, err, report


def the_server(home) -> int:
    servers = [line for line in vllm_processes(home) if "vllm.entrypoints.openai.api_server" in line]
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
    assert vllm_processes(home) == [] and vllm_processes() == []


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
    assert vllm_processes(home) == [] and vllm_processes() == []


# ---------------------------------------------------------------- vLLM dies mid-stage


def test_server_killed_during_evals(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"evals": {"tasks": ["support_intent", "support_facts"], "num_concurrent": 2, "limit": 60,
                       "metrics": {"support_intent/acc": {"floor": 0.1}}}, "load": SMALL_LOAD}
    gate = Gate(release(tmp_path / "team", demo_hub, gates), mlflow_server, model_home, tmp_path / "run")
    gate.wait_for("evals: started", "lm-eval:")
    gate.wait_for_process("lm_eval")  # lm-eval is running against the server: kill the server under it
    os.kill(the_server(model_home), signal.SIGKILL)
    code, out, err, report = gate.finish()
    assert_server_death(code, out, err, report, "evals", mlflow_server, model_home)
    assert statuses(report)["serve"] == "passed"


def test_server_killed_during_the_load_test(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"load": {"peak_concurrency": 2, "levels": [1, 2],
                      "prompts": {"input_len": 64, "output_len": 256, "requests_per_concurrency": 6}}}
    gate = Gate(release(tmp_path / "team", demo_hub, gates), mlflow_server, model_home, tmp_path / "run")
    gate.wait_for("load: started", "load: level")
    gate.wait_for_process("vllm.benchmarks.serve")  # the serving benchmark is running: kill the server under it
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
    assert vllm_processes(model_home) == [] and vllm_processes() == []
    # a taken serving.port: tests/integration/test_faults.py; corrupt weights (exit 1, does not load): test_gate_e2e.py


# ---------------------------------------------------------------- SIGINT / SIGTERM mid-stage


def test_sigint_during_evals(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"evals": {"tasks": ["support_intent"], "num_concurrent": 2, "limit": 60}, "load": SMALL_LOAD}
    gate = Gate(release(tmp_path / "team", demo_hub, gates), mlflow_server, model_home, tmp_path / "run")
    gate.wait_for("evals: started", "lm-eval:")
    gate.wait_for_process("lm_eval")  # lm-eval is running: it must go with the server
    gate.proc.send_signal(signal.SIGINT)
    code, out, err, report = gate.finish(timeout_s=180)
    assert_interrupted(code, out, err, report, "evals", "SIGINT", mlflow_server, model_home)


def test_sigterm_during_the_load_test(demo_hub, mlflow_server, model_home, tmp_path):
    gates = {"load": {"peak_concurrency": 2, "levels": [1, 2],
                      "prompts": {"input_len": 64, "output_len": 256, "requests_per_concurrency": 6}}}
    gate = Gate(release(tmp_path / "team", demo_hub, gates), mlflow_server, model_home, tmp_path / "run")
    gate.wait_for("load: started", "load: level")
    gate.wait_for_process("vllm.benchmarks.serve")  # the serving benchmark is running: it must go with the server
    gate.proc.send_signal(signal.SIGTERM)
    code, out, err, report = gate.finish(timeout_s=180)
    assert_interrupted(code, out, err, report, "load", "SIGTERM", mlflow_server, model_home)
