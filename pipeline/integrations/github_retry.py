"""Bounded retries for GitHub calls, and the mapping of github3's exceptions to `GitHubError`.

What is retried (with exponential backoff, at most `Retry.attempts` requests in all):
    5xx answers, timeouts and refused connections, and rate limiting (403 or 429 carrying
    `retry-after`, or `x-ratelimit-remaining: 0` with `x-ratelimit-reset`: wait as told, capped).
What is not: every other 4xx (401 bad credentials, 403 forbidden, 404, 422 ...): the same request
would get the same answer. The message names the call, GitHub's answer and the attempts, never the token.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pipeline.errors import BadInput, GitHubError
from pipeline.util.secrets import redact

if TYPE_CHECKING:
    import requests
    from github3.exceptions import GitHubException

log = logging.getLogger(__name__)
T = TypeVar("T")

HINTS = {401: "the token is invalid or expired (GITHUB_TOKEN)",
         403: "the token lacks a permission this call needs",
         404: "not found, or the token cannot see it"}


@dataclass(frozen=True)
class Retry:
    attempts: int = 4  # requests in all, the first included
    base_delay_s: float = 1.0  # 1, 2, 4 ... between attempts
    max_wait_s: float = 60.0  # cap on any single wait, rate-limit waits included

    @classmethod
    def from_env(cls) -> Retry:
        """$MODELGATE_GITHUB_RETRY="attempts,base_delay_s,max_wait_s" (e.g. "2,0.1,5"), else the defaults."""
        text = os.environ.get("MODELGATE_GITHUB_RETRY", "").strip()
        if not text:
            return cls()
        try:
            attempts, base, cap = text.split(",")
            return cls(max(1, int(attempts)), float(base), float(cap))
        except ValueError as exc:
            raise BadInput(f"MODELGATE_GITHUB_RETRY must be 'attempts,base_delay_s,max_wait_s', got {text!r}") \
                from exc


def _rate_limit_wait(resp: requests.Response | None) -> float | None:
    """Seconds GitHub asks us to wait, or None when the answer is not rate limiting."""
    if resp is None or resp.status_code not in (403, 429):
        return None
    headers = resp.headers
    if headers.get("retry-after", "").strip().isdigit():
        return float(headers["retry-after"])
    if headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(headers.get("x-ratelimit-reset", "0")) - time.time())
        except ValueError:
            return 0.0
    return 0.0 if resp.status_code == 429 else None


def _answer(exc: GitHubException) -> tuple[int | None, str, float | None]:
    """(status, what GitHub answered, wait if retryable else None) for a github3 exception."""
    from github3 import exceptions as gh

    if isinstance(exc, gh.TransportError):  # ConnectionError (timeouts included) is a TransportError
        inner = exc.exception
        return None, f"no answer ({type(inner).__name__})", 0.0
    if isinstance(exc, gh.GitHubError):
        resp = exc.response
        status = exc.code
        msg = exc.msg if isinstance(exc.msg, str) else "(no message)"
        if exc.errors:
            msg += " " + "; ".join(str(e.get("message") or e) if isinstance(e, dict) else str(e)
                                   for e in exc.errors)
        text = f"{status} {msg}".strip() if status else msg
        if status is not None and status >= 500:
            return status, text, 0.0
        wait = _rate_limit_wait(resp)
        if wait is not None:
            return status, f"{text} (rate limited)", wait
        if status in HINTS:
            text += f": {HINTS[status]}"
        return status, text, None
    return None, f"{type(exc).__name__}: {exc}", None


def call(name: str, fn: Callable[[], T], retry: Retry, *, secret: str = "",
         sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `fn` (one whole, idempotent GitHub operation) with bounded retries; map failures to GitHubError."""
    from github3 import exceptions as gh

    def clean(text: str) -> str:
        text = redact(text)
        return text.replace(secret, "***") if secret else text

    for attempt in range(1, retry.attempts + 1):
        try:
            return fn()
        except gh.GitHubException as exc:
            status, text, wait = _answer(exc)
            if wait is None or attempt == retry.attempts:
                tries = f"after {attempt} attempt{'s' if attempt > 1 else ''}" if wait is not None \
                    else "not retried"
                raise GitHubError(clean(f"GitHub {name}: {text} ({tries})"), status=status,
                                  attempts=attempt) from exc
            delay = min(max(wait, retry.base_delay_s * 2 ** (attempt - 1)), retry.max_wait_s)
            log.warning("%s", clean(f"GitHub {name}: {text}; retry {attempt}/{retry.attempts - 1} "
                                    f"in {delay:.2f}s"))
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
