"""A stand-in OpenAI-compatible chat endpoint on loopback, answering with a function of the request body.

    with fake_chat(answer) as endpoint:     # answer(body) -> (content, tool_calls, finish_reason)
        ...endpoint.base_url, endpoint.served_name, endpoint.requests (the bodies received)
    fake_chat(answer, served_name, api_key="k")   # every request without `Authorization: Bearer k` gets 401

GET /v1/models lists the served name, as vLLM does.

Used where a test needs the chat client's real HTTP path but not a model (the replay gate's integration tests).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[str | None, list[dict[str, Any]] | None, str]


@dataclass
class FakeEndpoint:
    base_url: str
    served_name: str
    log_file: Any = None
    pid: Any = None
    api_key: str | None = None
    request_timeout_s: float = 10.0
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def fake_chat(answer: Callable[[dict[str, Any]], Reply], served_name: str = "chat@fake",
              api_key: str | None = None) -> Iterator[FakeEndpoint]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _refused(self) -> bool:
            if api_key is None or self.headers.get("Authorization") == f"Bearer {api_key}":
                return False
            self._send(401, {"error": {"message": "Unauthorized"}})
            return True

        def _send(self, status: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self._refused():
                return
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": served_name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            if self._refused():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body)
            content, calls, finish = answer(body)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = [{"id": f"call_{i}", "type": "function", "function": c}
                                         for i, c in enumerate(calls)]
            data = json.dumps({"model": body.get("model"), "choices": [
                {"index": 0, "message": message, "finish_reason": finish}], "usage": {"completion_tokens": 5}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeEndpoint(f"http://127.0.0.1:{server.server_address[1]}", served_name, api_key=api_key,
                           requests=received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
