"""The smoke probe: after start, one chat completion and one streamed (SSE) completion against the server.

The probe checks transport and records what the model answered; it never judges the content (the format
and eval stages do, on many cases).

Transport (an environment fault, InfraError, exit 3 when it breaks):
- the server answers at all (a timeout or refused connection is retried, then an InfraError naming it);
- /v1/models answers 2xx and lists the expected served name;
- a 2xx chat answer is a JSON object with a first choice that carries a finish reason;
- the stream is well-formed SSE: every `data:` line but the last parses as a JSON object, the stream ends
  with `data: [DONE]`, and its final choice carries a finish reason.

Content (recorded as evidence, never an error): the chat and streamed text, their finish reasons, the token
counts the server reports. Empty text, text cut at `max_tokens` (finish reason "length") or garbage are notes
(`ProbeResult.notes`); the serve stage passes and the quality stages judge the candidate.

HTTP error answers from a live server (the general rule, `answer_fault`): the probe's request is fixed,
well-formed and valid for any chat model (one user message, a small max_tokens, temperature 0), so
- 400 and 422 (the server understood the request and refused what the model made of it: the chat template
  does not render, the tokenizer fails, the templated prompt does not fit) and 500 (the server raised while
  handling it and still runs: the model's template or code failed) are the candidate's: recorded in
  `ProbeResult.refusals`, the serve stage rejects the candidate with that answer as evidence;
- every other status is the environment's: 401/403 (credentials), 404/405 (route or model missing),
  408/429 (time-out, rate limit), 502/503/504 (gateway, overloaded, not ready) and anything unlisted:
  InfraError. An error object inside the SSE stream (`data: {"error": {..., "code": N}}`) is judged by its
  code the same way (no code: 500).
A 5xx from a server that has died is the environment: the serve stage checks the server is alive before it
blames the candidate for a refusal.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import InfraError
from pipeline.serving.auth import auth_headers

CANDIDATE_STATUSES = frozenset({400, 422, 500})  # see the module docstring: the candidate's answers


def answer_fault(status: int) -> str:
    """Whose fault an HTTP error answer to the probe's well-formed request is: "candidate" or "environment"."""
    return "candidate" if status in CANDIDATE_STATUSES else "environment"


@dataclass(frozen=True)
class Refusal:
    """An HTTP error answer the module rule lays at the candidate's door."""

    request: str  # "chat" or "stream"
    status: int
    message: str

    def line(self) -> str:
        return f"the {self.request} completion was answered with HTTP {self.status}: {self.message}"


@dataclass(frozen=True)
class ProbeResult:
    served_models: list[str]
    chat_text: str = ""
    chat_latency_s: float = 0.0
    chat_finish_reason: str | None = None
    chat_usage: dict[str, int] = field(default_factory=dict)
    stream_text: str = ""
    stream_ttft_s: float | None = None  # None: no content arrived (recorded, not an error)
    stream_total_s: float = 0.0
    stream_chunks: int = 0
    stream_finish_reason: str | None = None
    refusals: tuple[Refusal, ...] = ()
    notes: tuple[str, ...] = ()

    def evidence(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        """What the model answered, for the report."""
        return {"prompt": prompt, "max_tokens": max_tokens, "chat_text": self.chat_text,
                "finish_reason": self.chat_finish_reason, "usage": self.chat_usage,
                "stream_text": self.stream_text, "stream_finish_reason": self.stream_finish_reason,
                "stream_chunks": self.stream_chunks,
                "refusals": [{"request": r.request, "status": r.status, "message": r.message}
                             for r in self.refusals],
                "notes": list(self.notes)}


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
        except httpx.HTTPError as exc:  # undecodable bytes, a broken stream: transport, not the model
            raise InfraError(f"smoke probe against {base_url} failed: {type(exc).__name__}: {exc}") from exc
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # not the OpenAI answer shape
            raise InfraError(f"smoke probe against {base_url}: the answer is not shaped like the OpenAI API's "
                             f"({type(exc).__name__}: {exc})") from exc
    raise AssertionError("unreachable")


def _error_message(body: str) -> str:
    """The server's own error message from an error answer (OpenAI shape or FastAPI's), else the body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return " ".join(body.split())[:300] or "(empty body)"
    if isinstance(doc, dict):
        err = doc.get("error", doc.get("detail", doc.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return " ".join(str(err).split())[:300]
    return " ".join(body.split())[:300]


def _check_status(base_url: str, request: str, response: Any, refusals: list[Refusal]) -> bool:
    """True when the answer is 2xx. A candidate's error answer is recorded in `refusals` (False); an
    environment's raises InfraError."""
    status = response.status_code
    if 200 <= status < 300:
        return True
    message = _error_message(response.text)
    if answer_fault(status) == "candidate":
        refusals.append(Refusal(request, status, message))
        return False
    raise InfraError(f"smoke probe against {base_url}: the {request} request was answered with HTTP {status} "
                     f"(the environment's fault: credentials, route, rate limit or an unavailable server): {message}")


def _first_choice(base_url: str, doc: Any) -> dict[str, Any]:
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InfraError(f"smoke probe against {base_url}: the chat answer has no choices: {str(doc)[:200]}")
    return choices[0]


def _probe_once(base_url: str, served_name: str, prompt: str, max_tokens: int, timeout_s: float,
                api_key: str | None) -> ProbeResult:
    import httpx

    headers = auth_headers(api_key)
    refusals: list[Refusal] = []
    chat_text, chat_finish, chat_usage, chat_latency = "", None, {}, 0.0
    with httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers) as client:
        models = client.get("/v1/models")
        if not 200 <= models.status_code < 300:
            raise InfraError(f"smoke probe against {base_url}: /v1/models answered HTTP {models.status_code}: "
                             f"{_error_message(models.text)}")
        try:
            served = [m["id"] for m in models.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InfraError(f"smoke probe against {base_url}: /v1/models did not answer a model list "
                             f"({type(exc).__name__}: {exc})") from exc
        if served_name not in served:
            raise InfraError(f"the server does not serve {served_name!r} (it serves {served})")
        messages = [{"role": "user", "content": prompt}]
        body: dict[str, Any] = {"model": served_name, "messages": messages, "max_tokens": max_tokens,
                                "temperature": 0}
        t0 = time.monotonic()
        chat = client.post("/v1/chat/completions", json=body)
        chat_latency = time.monotonic() - t0
        if _check_status(base_url, "chat", chat, refusals):
            try:
                doc = chat.json()
            except ValueError as exc:
                raise InfraError(f"smoke probe against {base_url}: the chat answer is not JSON: "
                                 f"{chat.text[:200]!r}") from exc
            choice = _first_choice(base_url, doc)
            chat_finish = choice.get("finish_reason")
            if not chat_finish:
                raise InfraError(f"smoke probe against {base_url}: the chat answer's choice has no finish reason")
            chat_text = (choice.get("message") or {}).get("content") or ""
            usage = doc.get("usage") or {}
            chat_usage = {k: int(v) for k, v in usage.items() if isinstance(v, int)}
        stream = _stream(client, base_url, {**body, "stream": True}, refusals)
    notes = _notes(chat_text, chat_finish, stream, refusals, max_tokens)
    return ProbeResult(served_models=served, chat_text=chat_text, chat_latency_s=chat_latency,
                       chat_finish_reason=chat_finish, chat_usage=chat_usage, stream_text=stream.text,
                       stream_ttft_s=stream.ttft, stream_total_s=stream.total, stream_chunks=stream.chunks,
                       stream_finish_reason=stream.finish, refusals=tuple(refusals), notes=notes)


@dataclass
class _Stream:
    text: str = ""
    ttft: float | None = None
    total: float = 0.0
    chunks: int = 0
    finish: str | None = None
    answered: bool = False  # 2xx and complete (not refused)


def _stream(client: Any, base_url: str, body: dict[str, Any], refusals: list[Refusal]) -> _Stream:
    out = _Stream()
    t0 = time.monotonic()
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        if not 200 <= resp.status_code < 300:
            resp.read()
        if not _check_status(base_url, "stream", resp, refusals):
            return out
        done = False
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments (":"), event/id fields: SSE allows them
            data = line[5:].strip()
            if done:
                raise InfraError(f"smoke probe against {base_url}: the stream went on after [DONE]: {data[:200]!r}")
            if data == "[DONE]":
                done = True
                continue
            try:
                chunk = json.loads(data)
            except ValueError as exc:
                raise InfraError(f"smoke probe against {base_url}: broken SSE framing: a data line is not "
                                 f"JSON: {data[:200]!r}") from exc
            if not isinstance(chunk, dict):
                raise InfraError(f"smoke probe against {base_url}: broken SSE framing: a data line is not a "
                                 f"JSON object: {data[:200]!r}")
            if "error" in chunk or chunk.get("object") == "error":  # vLLM's shapes, newer and older
                err = chunk.get("error", chunk)
                err = err if isinstance(err, dict) else {"message": err}
                code = err.get("code")
                status = code if isinstance(code, int) else 500
                message = " ".join(str(err.get("message", err)).split())[:300]
                if answer_fault(status) == "candidate":
                    refusals.append(Refusal("stream", status, f"(an error inside the stream) {message}"))
                    return out
                raise InfraError(f"smoke probe against {base_url}: the stream carried an error with code "
                                 f"{status} (the environment's fault): {message}")
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content") or ""
                if delta and out.ttft is None:
                    out.ttft = time.monotonic() - t0
                out.text += delta
                if choice.get("finish_reason"):
                    out.finish = choice["finish_reason"]
            out.chunks += 1
        out.total = time.monotonic() - t0
    if not done:
        raise InfraError(f"smoke probe against {base_url}: the stream ended without `data: [DONE]` "
                         f"after {out.chunks} chunks")
    if not out.finish:
        raise InfraError(f"smoke probe against {base_url}: the stream's final choice has no finish reason")
    out.answered = True
    return out


def _notes(chat_text: str, chat_finish: str | None, stream: _Stream, refusals: list[Refusal],
           max_tokens: int) -> tuple[str, ...]:
    """What is worth a line in the report about the answers (never a verdict)."""
    refused = {r.request for r in refusals}
    notes = []
    for request, text, finish in (("chat", chat_text, chat_finish),
                                  ("stream", stream.text, stream.finish)):
        if request in refused:
            continue
        if not text.strip():
            notes.append(f"the model answered the {request} completion with empty text (finish reason {finish})")
        elif finish == "length":
            notes.append(f"the {request} answer was cut at max_tokens ({max_tokens})")
    return tuple(notes)
