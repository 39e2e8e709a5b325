"""The PromQL of every signal, over vLLM's own metrics (the names vLLM 0.32 exports, labelled by `model_name`, the
served name `<prefix>@<rev12>` that `modelgate resolve` reports). `modelgate watch`, the alerting rules and the Argo
Rollouts AnalysisTemplate all build their queries here, so they ask the same questions.

    p95 e2e latency / TTFT / TPOT   histogram_quantile(0.95, sum by (le) (rate(<histogram>_bucket{sel}[w]))), in s
    finished                        sum(increase(vllm:request_success_total{sel}[w])) (every finish reason)
    in the system                   vllm:num_requests_running + vllm:num_requests_waiting (summed over engines)
    arrived                         finished + (in the system at the window's end - at its start): every request
                                    that reached the server in the window, whether it finished or not
    request rate                    arrived / w, requests/s: what production offered, not what the version served
    unfinished share                (in the system at the end - at the start) / arrived: the backlog the window
                                    added, as a share of its arrivals (a version that cannot keep up piles them up)
    failed share                    finished abort or error / all finished
    length share                    finished by length (max_tokens or the context) / all finished
    output tokens per request       increase(vllm:generation_tokens_total) / increase(vllm:request_success_total)
    queue length                    max over the window of vllm:num_requests_waiting (summed over engines)
    preemptions                     increase(vllm:num_preemptions_total)
"""

from __future__ import annotations

import re

E2E = "vllm:e2e_request_latency_seconds"
TTFT = "vllm:time_to_first_token_seconds"
TPOT = "vllm:request_time_per_output_token_seconds"
SUCCESS = "vllm:request_success_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
PREEMPTIONS = "vllm:num_preemptions_total"
FAILED_REASONS = "abort|error"

HISTOGRAMS = {"p95_e2el_ms": E2E, "p95_ttft_ms": TTFT, "p95_tpot_ms": TPOT}  # gates.load.slo key -> histogram

_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,120}$")


def selector(served_name: str) -> str:
    """`model_name="chat@0123456789ab"`; a served name is checked (it is put inside a query)."""
    if not _NAME.match(served_name):
        raise ValueError(f"not a served model name: {served_name!r}")
    return f'model_name="{served_name}"'


def duration(seconds: int) -> str:
    return f"{seconds}s"


def p95(histogram: str, served_name: str, window_s: int) -> str:
    return (f"histogram_quantile(0.95, sum by (le) (rate({histogram}_bucket{{{selector(served_name)}}}"
            f"[{duration(window_s)}])))")


def buckets(histogram: str, served_name: str, window_s: int) -> str:
    """Requests per bucket over the window (cumulative `le` counts), for the per-request comparison."""
    return f"sum by (le) (increase({histogram}_bucket{{{selector(served_name)}}}[{duration(window_s)}]))"


def finished(served_name: str, window_s: int, reasons: str | None = None) -> str:
    """Requests that finished within the window (with one of `reasons`, a regex, when given)."""
    sel = selector(served_name) + (f', finished_reason=~"{reasons}"' if reasons else "")
    return f"sum(increase({SUCCESS}{{{sel}}}[{duration(window_s)}]))"


def in_system(served_name: str, offset_s: int = 0) -> str:
    """Requests running or waiting, `offset_s` seconds before the evaluation time; 0 without series (a server not
    up then had none)."""
    off = f" offset {duration(offset_s)}" if offset_s else ""
    sel = selector(served_name)
    return f"(sum({RUNNING}{{{sel}}}{off}) or vector(0)) + (sum({WAITING}{{{sel}}}{off}) or vector(0))"


def backlog_growth(served_name: str, window_s: int) -> str:
    """Requests in the system at the window's end minus at its start."""
    return f"(({in_system(served_name)}) - ({in_system(served_name, window_s)}))"


def arrived(served_name: str, window_s: int) -> str:
    """Requests that reached the server within the window: those that finished plus the growth of those in it (a
    request that arrived and is still running or waiting counts; one that was waiting before the window and
    finished in it does not)."""
    return f"(({finished(served_name, window_s)} or vector(0)) + {backlog_growth(served_name, window_s)})"


def request_rate(served_name: str, window_s: int) -> str:
    """The arrival rate (requests/s): the traffic production offered, whatever the version could serve of it."""
    return f"{arrived(served_name, window_s)} / {window_s}"


def unfinished_share(served_name: str, window_s: int) -> str:
    """The backlog the window added, as a share of its arrivals."""
    return f"{backlog_growth(served_name, window_s)} / {arrived(served_name, window_s)}"


def share(served_name: str, window_s: int, reasons: str) -> str:
    return f"{finished(served_name, window_s, reasons)} / {finished(served_name, window_s)}"


def output_tokens_per_request(served_name: str, window_s: int) -> str:
    return (f"sum(increase({GENERATION_TOKENS}{{{selector(served_name)}}}[{duration(window_s)}])) / "
            f"{finished(served_name, window_s)}")


def queue_max(served_name: str, window_s: int) -> str:
    return f"max_over_time(sum({WAITING}{{{selector(served_name)}}})[{duration(window_s)}:])"


def preemptions(served_name: str, window_s: int) -> str:
    return f"sum(increase({PREEMPTIONS}{{{selector(served_name)}}}[{duration(window_s)}]))"
