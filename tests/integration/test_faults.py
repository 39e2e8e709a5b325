"""The fault matrix without vLLM: the real `modelgate gate` code (CLI, runner, report, record) in a subprocess.

- SIGINT and SIGTERM during every stage (stand-in stages, the one under test blocks until signalled; the
  `serve` stand-in starts a child process torn down through `ctx.cleanup`, as the vLLM server is): exit 130,
  the stage `interrupted`, later ones skipped, nothing recorded, the child gone.
- An unwritable run directory (a path under a regular file: ENOTDIR) and a full disk (a 64 KiB tmpfs, mounted
  for real or in the child's own user + mount namespace: tests/support/tinydisk.py) for a stage's files, the
  report, and MLflow's artifact store: exit 3 naming the path and the system's reason, nothing recorded as passed.
- A staging endpoint that hangs (accepts connections, never answers), at the smoke probe, the format checks,
  lm-eval and the load test: per-request timeout (`serving.request_timeout_s`) and bounded retries, exit 3 in
  bounded time, the message naming the timeout.
- `serving.port` already taken: exit 3 naming host:port before vLLM is started.

The same faults with a real vLLM server: tests/e2e/test_faults_e2e.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from pipeline.gate.run import STAGES
from tests.support import cli, tinydisk
from tests.support.model_repo import TINY_MODEL, build_model_repo
from tests.support.processes import alive
from tests.support.releases import copy_project_inputs, write_release
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
STAGE_NAMES = [name for name, _ in STAGES]

# ---------------------------------------------------------------- the harness: real gate, stand-in stages

HARNESS = """
import functools, os, subprocess, sys, time
from pipeline import cli
from pipeline.gate import run as gate
from pipeline.util.procgroup import stop_group
from pipeline.core.result import Status, StageResult
target, pidfile, mode = sys.argv[1], sys.argv[2], sys.argv[3]

def make(name):
    def run(ctx):
        artifacts = {}
        if name == "serve":
            proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
            ctx.cleanup.callback(stop_group, proc, 5)
            open(pidfile, "w").write(str(proc.pid))
        if name == target and mode == "block":
            print("BLOCKING in " + name, file=sys.stderr, flush=True)
            # until the signal under test arrives: in short sleeps, since a signal that lands between the
            # print above and the start of one long sleep is handled by its handler only when that sleep ends
            while True:
                time.sleep(0.2)
        if name == target and mode == "busy":
            import threading
            def spin():
                while True:
                    pass
            worker = threading.Thread(target=spin, daemon=True)
            worker.start()
            print(f"BUSY {worker.native_id} BLOCKING in {name}", file=sys.stderr, flush=True)
            time.sleep(600)  # one long wait: only a signal delivered to this (the main) thread interrupts it
        if name == target and mode == "write":
            (ctx.run_dir / name).mkdir(parents=True, exist_ok=True)
            (ctx.run_dir / name / "big.bin").write_bytes(b"x" * 4_000_000)
        if name == target and mode == "artifact":
            (ctx.run_dir / name).mkdir(parents=True, exist_ok=True)
            (ctx.run_dir / name / "cases.jsonl").write_text("{}\\n" * 1000)
            artifacts["cases.jsonl"] = str(ctx.run_dir / name / "cases.jsonl")
        return StageResult(name, Status.PASSED, metrics={"ok": 1.0}, artifacts=artifacts)
    return run

gate.run_gate = functools.partial(gate.run_gate, stages=tuple((n, make(n)) for n, _ in gate.STAGES))
sys.exit(cli.main(sys.argv[4:]))
"""


def start(tmp_path, target, mode, run_dir, model="support-bot", disk=None):
    """The gate with stand-in stages as a child (see HARNESS); (watched child, tracking URI, pid file). With a
    `disk` (tests/support/tinydisk.py) the child runs where that disk is mounted."""
    config = write_release(tmp_path, model=model)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pidfile = tmp_path / "child.pid"
    gate = cli.start("gate", "--config", str(config), "--run-dir", str(run_dir), env={"MLFLOW_TRACKING_URI": uri},
                     python=["-c", HARNESS, target, str(pidfile), mode], wrap=disk.wrap if disk else None)
    return gate, uri, pidfile


def recorded_runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps) if exps else []


def model_versions(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri).search_model_versions()


def last_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


# ---------------------------------------------------------------- SIGINT / SIGTERM during every stage


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("target", STAGE_NAMES)
def test_signal_during_a_stage_exits_130_marks_it_interrupted_and_tears_down(tmp_path, target, sig):
    run_dir = tmp_path / "run"
    gate, uri, pidfile = start(tmp_path, target, "block", run_dir)
    gate.wait_for_line(f"BLOCKING in {target}", timeout_s=120)
    gate.proc.send_signal(sig)
    code, out, err = gate.finish(timeout_s=60)
    assert code == 130, out + err
    assert "Traceback" not in err, err
    assert "verdict: INTERRUPTED (exit 130)" in out and "mlflow run: (not recorded)" in out
    report = json.loads((run_dir / "report.json").read_text())  # the partial report is kept
    status = {s["name"]: s["status"] for s in report["stages"]}
    i = STAGE_NAMES.index(target)
    assert report["verdict"] == "interrupted" and report["exit_code"] == 130 and status[target] == "interrupted"
    assert report["stages"][i]["reasons"] == [f"interrupted by {sig.name}"]
    assert all(status[n] == "passed" for n in STAGE_NAMES[:i])
    assert all(status[n] == "skipped" for n in STAGE_NAMES[i + 1:])
    assert recorded_runs(uri) == []  # an interrupted gate is never recorded, so it can never be promoted
    # the stand-in server is started by `serve`: from then on it exists, and it must be gone
    assert pidfile.exists() == (i >= STAGE_NAMES.index("serve")), "the serve stand-in did not run as it should"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        assert wait_for(lambda: not alive(pid), timeout_s=5), f"the serve stage's child {pid} survived {sig.name}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_the_kernel_gives_a_busy_worker_thread_still_stops_the_gate(tmp_path, sig):
    """The stage's main thread is in one long sleep beside a busy thread of its own; the signal is sent to the
    process with that thread as the kernel's first choice (kill with its thread id). Without the routing
    (util/interrupts.py) the handler waited for the sleep: tests/unit/util/test_interrupts.py shows that control."""
    import re

    gate, uri, _ = start(tmp_path, "evals", "busy", tmp_path / "run")
    line = gate.wait_for_line("BLOCKING in evals", timeout_s=120)
    time.sleep(0.5)  # into the sleep
    os.kill(int(re.search(r"BUSY (\d+)", line).group(1)), sig)
    code, out, err = gate.finish(timeout_s=60)
    assert code == 130, out + err
    assert "verdict: INTERRUPTED (exit 130)" in out and recorded_runs(uri) == []
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert {s["name"]: s["status"] for s in report["stages"]}["evals"] == "interrupted"


# ---------------------------------------------------------------- unwritable run directory, full disk


def test_unwritable_run_dir_is_exit_3_and_names_the_path(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the run directory should go")
    gate, uri, _ = start(tmp_path, "none", "pass", blocker / "run")
    code, out, err = gate.finish(timeout_s=120)
    assert code == 3, out + err
    last = last_error_line(err)
    assert last.startswith("modelgate: InfraError:") and str(blocker / "run") in last and "Not a directory" in last
    assert recorded_runs(uri) == []


@pytest.fixture(params=tinydisk.MODES)
def tiny_disk(request):
    """tiny_disk(path, full=False) -> a 64 KiB filesystem at path for the gate child: a real tmpfs mount (root),
    or the same tmpfs in the child's own user + mount namespace (any user); see tests/support/tinydisk.py."""
    disks = []

    def make(where: Path, full: bool = False) -> tinydisk.TinyDisk:
        disk = tinydisk.make(where, request.param, full=full)
        disks.append(disk)
        return disk

    yield make
    for disk in reversed(disks):
        disk.unmount()


def test_full_disk_under_a_stage_fails_closed_with_exit_3(tmp_path, tiny_disk):
    disk = tiny_disk(tmp_path / "tiny")
    gate, uri, _ = start(tmp_path, "format", "write", disk.path / "run", disk=disk)
    code, out, err = gate.finish(timeout_s=120)
    assert code == 3, out + err
    last = last_error_line(err)
    assert "No space left on device" in last and str(disk.path / "run" / "report.json") in last, last
    assert recorded_runs(uri) == []  # the report could not be kept, so nothing is recorded either


def test_full_disk_for_the_report_is_exit_3_naming_the_path(tmp_path, tiny_disk):
    disk = tiny_disk(tmp_path / "tiny", full=True)
    gate, uri, _ = start(tmp_path, "none", "pass", disk.path / "run", disk=disk)
    code, out, err = gate.finish(timeout_s=120)
    assert code == 3, out + err
    last = last_error_line(err)
    assert last == f"modelgate: InfraError: cannot write the gate report to {disk.path / 'run' / 'report.json'}: " \
                   "No space left on device", last
    assert recorded_runs(uri) == [] and model_versions(uri) == []


def test_full_mlflow_artifact_store_is_exit_3_and_nothing_is_recorded_as_passed(tmp_path, tiny_disk):
    """Every stage passed, but MLflow cannot store the artifacts: exit 3 naming the file, the store and the
    reason; the report is kept with the error; the run ends FAILED and does not say `passed`; no version."""
    disk = tiny_disk(tmp_path / "mlflow" / "artifacts", full=True)  # where a sqlite store beside release.yaml
    store = disk.path                                                # keeps its artifacts
    run_dir = tmp_path / "run"
    gate, uri, _ = start(tmp_path, "format", "artifact", run_dir, model="full-store", disk=disk)
    code, out, err = gate.finish(timeout_s=180)
    assert code == 3, out + err
    last = last_error_line(err)
    assert last.startswith("modelgate: InfraError: recording to MLflow at sqlite:///"), last
    assert f"cannot store {run_dir / 'report.json'} in file://{store}/" in last and "No space left on device" in last
    assert f"modelgate sync --run-dir {run_dir}" in last
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verdict"] == "passed" and "No space left on device" in report["tracking"]["error"]
    runs = recorded_runs(uri)
    assert len(runs) == 1 and runs[0].info.run_id == report["tracking"]["run_id"]
    assert runs[0].info.status == "FAILED" and runs[0].data.tags["modelgate.verdict"] == "recording"
    assert model_versions(uri) == []  # nothing to promote


# ---------------------------------------------------------------- a staging endpoint that hangs


def tiny_tokenizer_files() -> dict[str, str]:
    """A real (tiny, word-level) Hugging Face tokenizer, enough for lm-eval and the serving benchmark."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = ["<unk>", "<s>", "</s>", *(f"w{i}" for i in range(200)), *"the a is of to and what answer yes no".split()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    return {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
                                   "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 64,
                                   "num_hidden_layers": 1, "vocab_size": len(words),
                                   "max_position_embeddings": 2048}),
        "tokenizer.json": tok.to_str(),
        "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>",
                                             "bos_token": "<s>", "eos_token": "</s>", "model_max_length": 2048}),
    }


class Hangs(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that accepts every connection. `hang_from`: how many POSTs it answers
    (0: also every GET hangs, so the smoke probe's first request does; 2: the probe's chat and streamed
    completion are answered, then every POST hangs)."""

    served = ""
    hang_from = 0
    posts = 0
    authorized: list[str] = []
    release = threading.Event()

    def log_message(self, *args):
        pass

    def _json(self, payload):
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if type(self).hang_from == 0:
            type(self).release.wait(60)
            return
        if self.path.startswith("/v1/models"):
            self._json({"object": "list", "data": [{"id": self.served, "object": "model"}]})
        else:
            self._json({})

    def do_POST(self):
        cls = type(self)
        cls.authorized.append(self.headers.get("Authorization", ""))
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if cls.posts >= cls.hang_from:
            cls.release.wait(60)
            return
        cls.posts += 1
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunk = {"choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
            return
        self._json({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                                 "finish_reason": "stop"}], "usage": {"completion_tokens": 1}})


HANG_KEY_ENV = "HANGING_STAGING_KEY"
HANG_KEY = "hanging-staging-key-0123456789"


@pytest.fixture(scope="module")
def tokenizer_repo(tmp_path_factory):
    return build_model_repo(tmp_path_factory.mktemp("hub") / "model", {**TINY_MODEL, **tiny_tokenizer_files()})


def hanging_gate(tmp_path, tokenizer_repo, hang_from: int, gates: dict):
    """Run a gate against a hanging external endpoint; (process, seconds it took, report, handler)."""
    repo, revision, digests = tokenizer_repo

    class Handler(Hangs):
        served = f"chat@{revision[:12]}"
        posts = 0
        authorized = []
        release = threading.Event()

    Handler.hang_from = hang_from
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        if "format" in gates:
            (tmp_path / "prompts").mkdir()
            (tmp_path / "prompts" / "tiny.yaml").write_text(yaml.safe_dump({"suite": "tiny", "cases": [
                {"id": f"c{i}", "messages": [{"role": "user", "content": f"Say {i}"}], "expect": {"max_chars": 50}}
                for i in range(3)]}))
        if "evals" in gates:
            copy_project_inputs(tmp_path, "evalsets")
        config = write_release(
            tmp_path, model="hang-test", gates=gates,
            candidate={"source": "git", "repo": str(repo), "revision": revision, "files": digests},
            serving={"mode": "external", "external_url": f"http://127.0.0.1:{server.server_address[1]}/v1",
                     "api_key_env": HANG_KEY_ENV, "request_timeout_s": 1})
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
               "MODELGATE_HOME": str(tmp_path / "home"), HANG_KEY_ENV: HANG_KEY}
        t0 = time.monotonic()
        proc = cli.run_subprocess("gate", "--config", str(config), "--run-dir", str(tmp_path / "run"), env=env,
                                  timeout=400)
        took = time.monotonic() - t0
    finally:
        Handler.release.set()
        server.shutdown()
        server.server_close()
    assert proc.returncode == 3, proc.stdout + proc.stderr[-4000:]
    assert "Traceback" not in proc.stdout and HANG_KEY not in proc.stdout + proc.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["verdict"] == "error" and report["exit_code"] == 3 and "verdict: ERROR (exit 3)" in proc.stdout
    runs = recorded_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")  # recorded, as an error: fails closed
    assert len(runs) == 1 and runs[0].data.tags["modelgate.verdict"] == "error" and runs[0].info.status == "FAILED"
    print(f"hanging endpoint ({', '.join(gates) or 'probe'}): exit 3 after {took:.1f} s")
    return proc, took, report, Handler


def stage_of(report, name):
    return next(s for s in report["stages"] if s["name"] == name)


def test_endpoint_hanging_at_the_smoke_probe(tmp_path, tokenizer_repo):
    proc, took, report, _ = hanging_gate(tmp_path, tokenizer_repo, 0, {"load": {"levels": [1]}})
    serve = stage_of(report, "serve")
    assert serve["status"] == "error", serve
    assert "smoke probe against http://127.0.0.1:" in serve["reasons"][0]
    assert "no answer after 3 attempts" in serve["reasons"][0]
    assert "per-request timeout serving.request_timeout_s=1 s" in serve["reasons"][0]
    assert stage_of(report, "load")["status"] == "skipped"
    assert took < 60, f"gave up after {took:.0f} s"


def test_endpoint_hanging_at_the_format_checks(tmp_path, tokenizer_repo):
    proc, took, report, handler = hanging_gate(tmp_path, tokenizer_repo, 2,
                                               {"format": {"concurrency": 2, "pass_rate": {"floor": 0.1}}})
    fmt = stage_of(report, "format")
    assert fmt["status"] == "error" and "no answer" in fmt["reasons"][0], fmt
    assert "serving.request_timeout_s=1 s" in fmt["reasons"][0] and "after 3 attempts" in fmt["reasons"][0]
    assert stage_of(report, "serve")["status"] == "passed"
    assert set(handler.authorized) == {f"Bearer {HANG_KEY}"}  # the external endpoint's own key, from the env
    assert took < 60, f"gave up after {took:.0f} s"


def test_endpoint_hanging_at_the_evals(tmp_path, tokenizer_repo):
    proc, took, report, _ = hanging_gate(tmp_path, tokenizer_repo, 2, {"evals": {
        "tasks": ["support_intent"], "num_concurrent": 2, "limit": 4}})
    evals = stage_of(report, "evals")
    assert evals["status"] == "error", evals
    assert evals["reasons"][0].startswith("lm-eval exited with ")
    assert "(per-request timeout serving.request_timeout_s=1 s, 3 attempts)" in evals["reasons"][0]
    assert took < 180, f"gave up after {took:.0f} s"


def test_endpoint_hanging_at_the_load_test(tmp_path, tokenizer_repo):
    proc, took, report, _ = hanging_gate(tmp_path, tokenizer_repo, 2, {"load": {
        "peak_concurrency": 1, "levels": [1],
        "prompts": {"input_len": 16, "output_len": 8, "requests_per_concurrency": 2}}})
    load = stage_of(report, "load")
    assert load["status"] == "error", load  # not `failed`: nothing was measured, the model is not rejected
    assert load["reasons"][0].startswith("load 1x: no request completed (2 failed; per-request timeout "
                                         "serving.request_timeout_s=1 s;"), load["reasons"][0]
    assert "TimeoutError" in load["reasons"][0], load["reasons"][0]
    assert took < 180, f"gave up after {took:.0f} s"


# ---------------------------------------------------------------- serving.port already taken


def test_taken_port_is_exit_3_naming_it_before_vllm_starts(tmp_path):
    _, revision, digests = build_model_repo(tmp_path / "hub" / "model")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_release(
            tmp_path, model="port-test", serving={"port": port, "enforce_eager": True},
            candidate={"source": "git", "repo": "hub/model", "revision": revision, "files": digests})
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        env = {"MLFLOW_TRACKING_URI": uri, "MODELGATE_HOME": str(tmp_path / "home")}
        proc = cli.run_subprocess("gate", "--config", str(config), "--run-dir", str(tmp_path / "run"), env=env,
                                  timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    serve = stage_of(report, "serve")
    assert serve["status"] == "error"
    assert serve["reasons"][0] == f"cannot start vLLM on 127.0.0.1:{port} (serving.port): Address already in use"
    assert "starting vLLM" not in proc.stderr  # refused before a process was spawned: nothing to clean up
    runs = recorded_runs(uri)
    assert len(runs) == 1 and runs[0].data.tags["modelgate.verdict"] == "error"
