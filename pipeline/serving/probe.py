"""The smoke probe: after start, one chat completion and one streamed (SSE) completion against the server.

It proves the endpoint answers under the expected served name and measures TTFT once; it judges nothing
about quality (that is the format and eval stages' job).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from pipeline.errors import InfraError
from pipeline.serving.auth import auth_headers


@dataclass(frozen=True)
class ProbeResult:
    served_models: list[str]
    chat_text: str
    chat_latency_s: float
    chat_finish_reason: str | None
    stream_text: str
    stream_ttft_s: float
    stream_total_s: float
    stream_chunks: int


def probe(base_url: str, served_name: str, prompt: str, max_tokens: int, *, timeout_s: float = 120.0,
          api_key: str | None = None, retries: int = 2) -> ProbeResult:
    """Per-request timeout `timeout_s`; a timeout or refused connection is retried `retries` times (backoff
    0.5 s, 1 s, ...), then an InfraError naming the timeout. An HTTP error answer is not retried."""
    import httpx

    for attempt in range(retries + 1):
        try:
            return _probe_once(base_url, served_name, prompt, max_tokens, timeout_s, api_key)
        except httpx.TransportError as exc:
            if attempt == retries:
                raise InfraError(f"smoke probe against {base_url} got no answer after {retries + 1} attempts "
                                 f"({type(exc).__name__}: {exc or 'no answer'}; per-request timeout "
                                 f"serving.request_timeout_s={timeout_s:g} s)") from exc
            time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def _probe_once(base_url: str, served_name: str, prompt: str, max_tokens: int, timeout_s: float,
                api_key: str | None) -> ProbeResult:
    import httpx

    headers = auth_headers(api_key)
    try:
        with httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers) as client:
            models = client.get("/v1/models")
            models.raise_for_status()
            served = [m["id"] for m in models.json().get("data", [])]
            if served_name not in served:
                raise InfraError(f"the server does not serve {served_name!r} (it serves {served})")
            messages = [{"role": "user", "content": prompt}]
            t0 = time.monotonic()
            chat = client.post("/v1/chat/completions", json={
                "model": served_name, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
            chat.raise_for_status()
            chat_latency = time.monotonic() - t0
            choice = chat.json()["choices"][0]
            text, ttft, chunks = "", None, 0
            t0 = time.monotonic()
            body = {"model": served_name, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                    "stream": True}
            with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                resp.raise_for_status()
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content") or ""
                    if delta and ttft is None:
                        ttft = time.monotonic() - t0
                    text += delta
                    chunks += 1
            total = time.monotonic() - t0
    except httpx.TransportError:
        raise  # retried by probe()
    except httpx.HTTPError as exc:
        raise InfraError(f"smoke probe against {base_url} failed: {type(exc).__name__}: {exc}") from exc
    if ttft is None:
        raise InfraError("smoke probe: the streamed completion returned no content")
    return ProbeResult(served_models=served, chat_text=choice["message"].get("content") or "",
                       chat_latency_s=chat_latency, chat_finish_reason=choice.get("finish_reason"),
                       stream_text=text, stream_ttft_s=ttft, stream_total_s=total, stream_chunks=chunks)
