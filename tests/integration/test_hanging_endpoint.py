"""A staging endpoint that stops answering: it serves the smoke probe, then accepts every later request and
never replies. Per-request timeouts and bounded retries end the gate with exit 3 in bounded time, the
message naming the timeout; the cases are not counted as the model's failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.integration.test_bad_inputs import build_model_repo

pytestmark = pytest.mark.integration
SERVED = "chat@{rev}"


class StopsAnswering(BaseHTTPRequestHandler):
    served = ""
    answered_posts = 0
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
        if self.path.startswith("/v1/models"):
            self._json({"object": "list", "data": [{"id": self.served, "object": "model"}]})
        else:
            self._json({})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        cls = type(self)
        if cls.answered_posts >= 2:  # the probe's chat and streamed completion were answered: hang from now on
            cls.release.wait(60)
            return
        cls.answered_posts += 1
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunk = {"choices": [{"index": 0, "delta": {"content": "Hello"}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
            return
        self._json({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                                 "finish_reason": "stop"}], "usage": {"completion_tokens": 1}})


@pytest.fixture
def endpoint():
    class Handler(StopsAnswering):
        answered_posts = 0
        release = threading.Event()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, Handler
    Handler.release.set()
    server.shutdown()
    server.server_close()


def test_a_hanging_endpoint_fails_the_format_stage_with_exit_3_in_bounded_time(tmp_path, endpoint):
    server, handler = endpoint
    revision, digests = build_model_repo(tmp_path / "hub" / "model", {})
    handler.served = SERVED.format(rev=revision[:12])
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "tiny.yaml").write_text(yaml.safe_dump({"suite": "tiny", "cases": [
        {"id": f"c{i}", "messages": [{"role": "user", "content": f"Say {i}"}], "expect": {"max_chars": 50}}
        for i in range(3)]}))
    config = tmp_path / "release.yaml"
    config.write_text(yaml.safe_dump({
        "schema_version": 1, "model": {"name": "hang-test"},
        "candidate": {"source": "git", "repo": "hub/model", "revision": revision, "files": digests},
        "serving": {"mode": "external", "external_url": f"http://127.0.0.1:{server.server_address[1]}/v1",
                    "request_timeout_s": 1},
        "gates": {"format": {"concurrency": 2, "pass_rate": {"floor": 0.1}}},
    }))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "MODELGATE_HOME": str(tmp_path / "home")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "gate", "--config", str(config), "--run-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    took = time.monotonic() - t0
    assert proc.returncode == 3, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    fmt = next(s for s in report["stages"] if s["name"] == "format")
    assert fmt["status"] == "error" and "no answer" in fmt["reasons"][0]
    assert "serving.request_timeout_s=1 s" in fmt["reasons"][0] and "after 3 attempts" in fmt["reasons"][0]
    assert next(s for s in report["stages"] if s["name"] == "serve")["status"] == "passed"
    assert report["verdict"] == "error"
    assert took < 120, f"gave up after {took:.0f} s"
    print(f"hanging endpoint: exit 3 after {took:.1f} s")
