"""Chat completions against the staging endpoint, many at a time with bounded concurrency.

Per-request timeout and a bounded retry on connection errors and timeouts; an endpoint that still gives no
answer is an infrastructure error (InfraError, exit 3), not a failed case. An HTTP error answer (4xx/5xx)
is recorded as the case's error. Used by the format stage; the same code runs the baseline's cases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import InfraError
from pipeline.serving.auth import auth_headers
from pipeline.util.progress import Progress

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class ChatRequest:
    key: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]


@dataclass(frozen=True)
class ChatResponse:
    key: str
    text: str
    finish_reason: str | None
    latency_s: float
    completion_tokens: int
    error: str | None = None
    no_answer: bool = False  # the endpoint never answered (timeouts, refused) after the retries
    tool_calls: tuple[tuple[str, str], ...] = ()  # (function name, arguments JSON) of the answer's tool calls


def _tool_calls(message: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    functions = [c.get("function") or {} for c in message.get("tool_calls") or []]
    return tuple((str(f.get("name")), str(f.get("arguments") or "")) for f in functions)


def _one(client: httpx.Client, served_name: str, req: ChatRequest, retries: int) -> ChatResponse:
    import httpx

    body = {"model": served_name, "messages": req.messages, **req.params}
    t0 = time.monotonic()
    for attempt in range(retries + 1):
        try:
            resp = client.post("/v1/chat/completions", json=body)
        except httpx.TransportError as exc:
            if attempt == retries:
                return ChatResponse(req.key, "", None, time.monotonic() - t0, 0,
                                    f"{type(exc).__name__}: {exc or 'no answer'}", no_answer=True)
            time.sleep(0.5 * 2 ** attempt)
            continue
        latency = time.monotonic() - t0
        if resp.status_code != 200:
            return ChatResponse(req.key, "", None, latency, 0, f"HTTP {resp.status_code}: {resp.text[:200]}")
        data = resp.json()
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        message = choice["message"]
        return ChatResponse(req.key, message.get("content") or "", choice.get("finish_reason"),
                            latency, int(usage.get("completion_tokens") or 0), tool_calls=_tool_calls(message))
    raise AssertionError("unreachable")


def run_chats(base_url: str, served_name: str, requests: Sequence[ChatRequest], *, concurrency: int,
              timeout_s: float, retries: int = 2, progress: Progress = print,
              check_alive: Callable[[], None] | None = None, api_key: str | None = None) -> list[ChatResponse]:
    """All requests, `concurrency` at a time; results in request order. Progress every ~10%.
    `api_key` is sent as a bearer token (the staging server's per-gate key)."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    done: list[ChatResponse] = []
    step = max(1, len(requests) // 10)
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        headers = auth_headers(api_key)
        with httpx.Client(base_url=base_url, timeout=timeout_s, limits=limits, headers=headers) as client:
            for resp in pool.map(lambda r: _one(client, served_name, r, retries), requests):
                done.append(resp)
                if len(done) % step == 0 or len(done) == len(requests):
                    progress(f"{len(done)}/{len(requests)} answered")
                if resp.error and check_alive is not None:
                    check_alive()  # a dead server explains the error better than the error
                if resp.no_answer:  # the endpoint, not the model: the cases were never judged
                    raise InfraError(f"{base_url} gave no answer to case {resp.key} after {retries + 1} attempts "
                                     f"({resp.error}; per-request timeout serving.request_timeout_s={timeout_s:g} s)")
    finally:  # on Ctrl-C, do not wait for queued requests
        pool.shutdown(wait=False, cancel_futures=True)
    return done
