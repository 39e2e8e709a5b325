"""Prometheus' HTTP query API (`GET /api/v1/query`), the one way watch reads metrics. A Prometheus that does not
answer, or answers with an error, is an infrastructure error (exit 3) naming the URL and the query; a query with no
series (no traffic) is an empty result, never an error. Credentials in the URL are not printed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import InfraError

TIMEOUT_S = 10.0


def display(url: str) -> str:
    """The URL without user or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    def __init__(self, url: str, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, promql: str, at: float) -> list[Sample]:
        """An instant query evaluated at `at` (unix seconds): its samples; NaN values are left out."""
        import httpx

        where = f"Prometheus at {display(self.url)}"
        try:
            resp = httpx.get(f"{self.url}/api/v1/query", params={"query": promql, "time": f"{at:.3f}"},
                             timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise InfraError(f"{where} did not answer ({type(exc).__name__}: {exc})") from None
        try:
            doc: dict[str, Any] = resp.json()
        except ValueError:
            raise InfraError(f"{where}: HTTP {resp.status_code} without a JSON body for {promql!r}") from None
        if resp.status_code != 200 or doc.get("status") != "success":
            raise InfraError(f"{where}: query {promql!r} failed: HTTP {resp.status_code} "
                             f"{doc.get('errorType', '')}: {doc.get('error', '')}")
        data: dict[str, Any] = doc.get("data") or {}
        rows: list[dict[str, Any]]
        if data.get("resultType") == "scalar":
            rows = [{"metric": {}, "value": data.get("result")}]
        else:
            rows = list(data.get("result") or [])
        out = []
        for row in rows:
            value = float(row["value"][1])
            if not math.isnan(value):
                out.append(Sample(dict(row.get("metric") or {}), value))
        return out

    def value(self, promql: str, at: float) -> float | None:
        """The one value of a query that aggregates to one series; None when there is none (no data)."""
        samples = self.query(promql, at)
        return samples[0].value if samples else None
