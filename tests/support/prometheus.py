"""A real Prometheus (Debian's `prometheus` package, installed by scripts/setup-test.sh) on 127.0.0.1, scraping
every second a small exporter that serves vLLM-format metrics (the names, labels and buckets of vLLM 0.32, as in
tests/fixtures/vllm_metrics.txt) whose traffic the test sets per served name: request rate, latency scale, the
share finished by length or aborted, and how many requests a second the version can finish (`capacity`: the
arrivals beyond it wait, in `vllm:num_requests_waiting`).

    exporter.set("chat@0123456789ab", rate=20)                          # healthy traffic
    exporter.set("chat@0123456789ab", rate=20, latency=3, length=0.5)   # degraded
    exporter.set("chat@0123456789ab", rate=20, capacity=8)             # cannot keep up: a backlog grows
    exporter.set("chat@0123456789ab", rate=0)                           # no traffic (counters stay)
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from pipeline.serving.vllm_server import free_port
from tests.support.mlflow_server import stop_server

E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BASE = (0.55, 0.7, 0.9, 0.95, 1.2, 1.4, 1.7, 2.2)  # seconds, cycled request by request
TTFT_BASE = (0.03, 0.05, 0.07, 0.09, 0.12, 0.2, 0.3)
REASONS = ("stop", "length", "abort", "error", "repetition")


@dataclass
class Traffic:
    rate: float = 0.0
    latency: float = 1.0
    length: float = 0.1
    failed: float = 0.0
    tokens: int = 64
    capacity: float | None = None  # requests finished per second at most; None: every arrival finishes
    carry: float = 0.0
    finish_carry: float = 0.0
    backlog: int = 0  # arrived, not finished
    n: int = 0
    e2e: list[int] = field(default_factory=lambda: [0] * (len(E2E_BUCKETS) + 1))
    ttft: list[int] = field(default_factory=lambda: [0] * (len(TTFT_BUCKETS) + 1))
    tpot: list[int] = field(default_factory=lambda: [0] * (len(TPOT_BUCKETS) + 1))
    sums: dict[str, float] = field(default_factory=lambda: {"e2e": 0.0, "ttft": 0.0, "tpot": 0.0})
    reasons: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    tokens_total: int = 0


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    return next((i for i, b in enumerate(bounds) if value <= b), len(bounds))


class VllmExporter:
    """Serves /metrics; a thread turns each served name's traffic into requests every 50 ms."""

    def __init__(self) -> None:
        self.traffic: dict[str, Traffic] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # a scrape that timed out on a busy machine
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.threads = [threading.Thread(target=self.server.serve_forever, daemon=True),
                        threading.Thread(target=self._tick, daemon=True)]
        for t in self.threads:
            t.start()

    def set(self, name: str, rate: float, *, latency: float = 1.0, length: float = 0.1, failed: float = 0.0,
            capacity: float | None = None) -> None:
        with self.lock:
            t = self.traffic.setdefault(name, Traffic())
            t.rate, t.latency, t.length, t.failed, t.capacity = rate, latency, length, failed, capacity

    def _request(self, t: Traffic) -> None:
        i = t.n
        t.n += 1
        e2e, ttft = E2E_BASE[i % len(E2E_BASE)] * t.latency, TTFT_BASE[i % len(TTFT_BASE)] * t.latency
        tpot = (e2e - ttft) / t.tokens
        for key, bounds, counts, v in (("e2e", E2E_BUCKETS, t.e2e, e2e), ("ttft", TTFT_BUCKETS, t.ttft, ttft),
                                       ("tpot", TPOT_BUCKETS, t.tpot, tpot)):
            counts[_bucket(bounds, v)] += 1
            t.sums[key] += v
        # finish reasons spread evenly: every request's position decides it (deterministic)
        frac = (i * 0.618034) % 1.0
        reason = "abort" if frac < t.failed else "length" if frac < t.failed + t.length else "stop"
        t.reasons[reason] += 1
        t.tokens_total += t.tokens

    def _tick(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.05):
            now = time.monotonic()
            with self.lock:
                for t in self.traffic.values():
                    t.carry += t.rate * (now - last)
                    while t.carry >= 1:
                        t.carry -= 1
                        t.backlog += 1
                    if t.capacity is None:
                        t.finish_carry = 0.0
                        finishing = t.backlog
                    else:
                        t.finish_carry = min(t.finish_carry + t.capacity * (now - last), t.backlog + 1.0)
                        finishing = min(int(t.finish_carry), t.backlog)
                        t.finish_carry -= finishing
                    for _ in range(finishing):
                        t.backlog -= 1
                        self._request(t)
            last = now

    def render(self) -> str:
        out = []
        with self.lock:
            for name, t in sorted(self.traffic.items()):
                lab = f'engine="0",model_name="{name}"'
                for metric, bounds, counts, key in (
                        ("vllm:e2e_request_latency_seconds", E2E_BUCKETS, t.e2e, "e2e"),
                        ("vllm:time_to_first_token_seconds", TTFT_BUCKETS, t.ttft, "ttft"),
                        ("vllm:request_time_per_output_token_seconds", TPOT_BUCKETS, t.tpot, "tpot")):
                    out.append(f"# TYPE {metric} histogram")
                    running = 0
                    for b, c in zip((*map(str, bounds), "+Inf"), counts, strict=True):
                        running += c
                        out.append(f'{metric}_bucket{{engine="0",le="{b}",model_name="{name}"}} {running}.0')
                    out.append(f"{metric}_sum{{{lab}}} {t.sums[key]}")
                    out.append(f"{metric}_count{{{lab}}} {running}.0")
                out.append("# TYPE vllm:request_success_total counter")
                for reason, c in t.reasons.items():
                    out.append(f'vllm:request_success_total{{engine="0",finished_reason="{reason}",'
                               f'model_name="{name}"}} {c}.0')
                out.append("# TYPE vllm:generation_tokens_total counter")
                out.append(f"vllm:generation_tokens_total{{{lab}}} {t.tokens_total}.0")
                out.append("# TYPE vllm:num_requests_running gauge")
                out.append(f"vllm:num_requests_running{{{lab}}} {1 if t.rate else 0}.0")
                out.append("# TYPE vllm:num_requests_waiting gauge")
                out.append(f"vllm:num_requests_waiting{{{lab}}} {round(t.rate * t.latency / 10) + t.backlog}.0")
                out.append("# TYPE vllm:num_preemptions_total counter")
                out.append(f"vllm:num_preemptions_total{{{lab}}} 0.0")
        return "\n".join(out) + "\n"

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        pytest.fail(f"no `{name}`: run scripts/setup-test.sh (installs Debian's prometheus)")
    return found


class PrometheusServer:
    """Prometheus on 127.0.0.1 scraping `targets` (host:port, /metrics) every second, its TSDB under `root`."""

    def __init__(self, root: Path, *targets: str) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        listed = ", ".join(f"'{t}'" for t in targets)
        (root / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: vllm\n    static_configs: [{{targets: [{listed}]}}]\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline_s: float = 60) -> PrometheusServer:
        log = (self.root / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [binary("prometheus"), f"--config.file={self.root / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.root / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + deadline_s
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited:\n{(self.root / 'prometheus.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"prometheus not ready in {deadline_s:.0f} s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)
            self.proc = None
