"""A fake GitHub REST API on 127.0.0.1 (a thread), for tests.

Every request is first checked against GitHub's OpenAPI description (openapi.py): one that does not match
is answered 404/400/422 with the reason and recorded in `violations` (a test asserts there are none).
Requests under `/api/v3/` are GitHub Enterprise Server's form (checked against ghes-3.19.json); others are
api.github.com's. Then injected faults, then the token, then the operation (state.py).

    fake = FakeGitHub(token="...").start()
    fake.url, fake.ghe_url                        # http://127.0.0.1:PORT and http://127.0.0.1:PORT/api/v3
    fake.fail_next(2, "error")                    # the next 2 requests: 500
    fake.fail_next(1, "hang", path=r"/statuses/") # no answer until `hang_s` passes (a client timeout)
    fake.fail_next(1, "late", method="POST")      # done, but the answer never comes (the client timed out)
    fake.fail_next(3, "ratelimit", reset_in=1)    # 403 + x-ratelimit-remaining: 0 + x-ratelimit-reset
    fake.fail_next(1, "secondary", retry_after=1) # 429 + retry-after
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import openapi
from .state import Reply, State

GHE_PREFIX = "/api/v3"
FAULT_KINDS = ("error", "hang", "late", "ratelimit", "secondary")


@dataclass
class Fault:
    kind: str
    remaining: int
    path: str | None = None  # a regex searched in the request path
    method: str | None = None
    status: int = 500
    reset_in: float = 1.0
    retry_after: int = 1


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int = 0
    operation: str = ""


@dataclass
class FakeGitHub:
    token: str = "ghp_fakeTOKEN0123456789abcdefghijklmnop"
    hang_s: float = 3.0
    state: State = field(default_factory=State)
    violations: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def start(self) -> FakeGitHub:
        openapi.load()  # once per process; outside any request's timing
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ghfake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def ghe_url(self) -> str:
        return self.url + GHE_PREFIX

    def reset(self) -> None:
        self.state.reset()
        self.violations.clear()
        self.requests.clear()
        self.faults.clear()

    def fail_next(self, n: int, kind: str = "error", *, path: str | None = None, method: str | None = None,
                  **options) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}")
        self.faults.append(Fault(kind, n, path, method.upper() if method else None, **options))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.remaining > 0 and (fault.method in (None, method)) and \
                    (fault.path is None or re.search(fault.path, path)):
                fault.remaining -= 1
                return fault
        return None

    def answer(self, method: str, raw_path: str, headers, body: bytes) -> Reply | None:
        """The reply to one request (None: hang up without answering)."""
        parts = urlsplit(raw_path)
        path, base, spec_name = parts.path, self.url, openapi.DOTCOM
        if path == GHE_PREFIX or path.startswith(GHE_PREFIX + "/"):
            path, base, spec_name = path[len(GHE_PREFIX):] or "/", self.ghe_url, openapi.GHES
        query = parse_qs(parts.query, keep_blank_values=True)
        record = Request(method, parts.path, query, _json_or_text(body))
        self.requests.append(record)
        reply = self._answer(record, method, path, base, spec_name, query, headers, body)
        record.status = reply.status if reply else 0
        return reply

    def _answer(self, record, method, path, base, spec_name, query, headers, body) -> Reply | None:
        try:
            op, data = openapi.load(spec_name).validate(method, path, query, body,
                                                        headers.get("Content-Type", ""))
        except openapi.Violation as exc:
            self.violations.append(str(exc))
            return Reply(exc.status, {"message": str(exc), "documentation_url": "https://docs.github.com/rest"})
        record.operation = op.id
        fault = self._take_fault(method, path)
        if fault is not None and fault.kind != "late":
            return self._fault_reply(fault)
        auth = headers.get("Authorization", "")
        if auth.partition(" ")[2] != self.token or auth.partition(" ")[0].lower() not in ("token", "bearer"):
            return Reply(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                               "status": "401"})
        reply = self.state.handle(op, base, path, query, data)
        return self._fault_reply(fault) if fault is not None else reply

    def _fault_reply(self, fault: Fault) -> Reply | None:
        if fault.kind in ("hang", "late"):
            self._release.wait(self.hang_s)
            return None
        if fault.kind == "ratelimit":
            return Reply(403, {"message": "API rate limit exceeded for user ID 1.",
                               "documentation_url": "https://docs.github.com/rest/rate-limit"},
                         {"x-ratelimit-remaining": "0",
                          "x-ratelimit-reset": str(math.ceil(time.time() + fault.reset_in))})
        if fault.kind == "secondary":
            return Reply(429, {"message": "You have exceeded a secondary rate limit."},
                         {"retry-after": str(fault.retry_after)})
        return Reply(fault.status, {"message": "Server Error"})


def _json_or_text(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _public(data: Any) -> Any:
    """Without the fake's bookkeeping keys (they start with "_")."""
    if isinstance(data, list):
        return [_public(d) for d in data]
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if not k.startswith("_")}
    return data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeGitHub

    def log_message(self, format, *args):  # quiet
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server_fake.answer(self.command, self.path, self.headers, body)
        if reply is None:
            self.close_connection = True
            return
        payload = b"" if reply.body is None else json.dumps(_public(reply.body)).encode()
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json; charset=utf-8", "Content-Length": str(len(payload)),
                   "x-github-request-id": uuid.uuid4().hex[:16].upper(), "x-ratelimit-limit": "5000",
                   "x-ratelimit-remaining": "4999", "x-ratelimit-reset": str(int(time.time()) + 3600)}
        headers.update(reply.headers or {})
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve
