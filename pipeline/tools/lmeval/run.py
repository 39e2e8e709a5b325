"""Run lm-evaluation-harness against an OpenAI-compatible server (evalset.py says what, results.py parses what it
wrote).

lm-eval runs as a subprocess (``python -m lm_eval run --model local-completions ...``) rather than
through ``lm_eval.simple_evaluate``: the child can be interrupted as one process group (SIGINT, then
SIGKILL) without leaving threads of its request pool behind, its progress lines are streamed to
``progress`` while they happen, its global state (logging, seeds, sys.modules of task code) stays
out of the pipeline process, and the exact command is recorded so anyone can re-run it by hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InfraError, Interrupted
from pipeline.tools.lmeval.evalset import RAW, ChatMode, resolve_task_yamls
from pipeline.tools.lmeval.results import LmEvalRun, parse_output
from pipeline.util.interrupts import unblock_in_child
from pipeline.util.procgroup import stop_group
from pipeline.util.secrets import child_env

_TQDM = re.compile(r"(\d+)%\|")
# how loglikelihood requests (multiple_choice tasks) are scored: forced decoding on vLLM's prefix cache
# (lm-eval model modelgate-completions, pipeline/tools/lmeval_model.py) or lm-eval's local-completions echo
# requests with prompt logprobs (vLLM reads no prefix cache for those: every choice prefills its whole context)
LOGLIKELIHOOD_MODES = ("prefix_cached", "echo")
WAITING_NICENESS = 10  # a prestarted run's niceness until released


def _waiting_child() -> None:  # runs in the prestarted child between fork and exec
    unblock_in_child()
    os.nice(WAITING_NICENESS)
GO_ENV = "MODELGATE_LMEVAL_GO"  # a file: a prestarted run holds its first request until it exists (lm_eval_entry)
MAX_RETRIES = 3  # attempts per request (lm-eval's max_retries), each bounded by the per-request timeout



def build_command(
    base_url: str, model_name: str, tokenizer_dir: Path, tasks: list[str], include_path: Path,
    raw_dir: Path, num_concurrent: int = 4, limit: int | None = None, max_retries: int | None = None,
    timeout_s: float | None = None, mode: ChatMode = RAW, loglikelihood: str = "prefix_cached",
) -> list[str]:
    """The lm-eval 0.4.13 command line for one run (``base_url`` is the server root or .../v1).

    ``loglikelihood``: "prefix_cached" runs lm-eval's CLI through ``pipeline.tools.lm_eval_entry`` with
    ``--model modelgate-completions`` (local-completions whose loglikelihoods are scored by forced decoding on
    the prefix cache; generations unchanged); "echo" runs ``python -m lm_eval`` with ``local-completions``.

    Raw mode sends the prompt text (vLLM tokenizes it as /v1/completions does). Chat mode adds
    ``--apply_chat_template`` (and ``--fewshot_as_multiturn true|false``: lm-eval turns it on by itself) and
    ``tokenized_requests=True``: lm-eval 0.4.13's API models render a chat template only through the
    huggingface tokenizer when requests are tokenized (otherwise they send the message list as JSON, which
    /v1/completions rejects); the rendered prompt is tokenized without special tokens, as vLLM's chat endpoint
    tokenizes its rendered prompt, and sent as token ids.
    """
    url = base_url.rstrip("/")
    if not url.endswith("/completions"):
        url = (url if url.endswith("/v1") else url + "/v1") + "/completions"
    model_args = ",".join([
        f"base_url={url}", f"model={model_name}", f"tokenizer={Path(tokenizer_dir).resolve()}",
        "tokenizer_backend=huggingface", f"tokenized_requests={mode.apply_chat_template}",
        f"num_concurrent={num_concurrent}", f"max_retries={max_retries or MAX_RETRIES}",
        *([f"timeout={max(1, int(timeout_s))}"] if timeout_s else []),  # per request (lm-eval's default: 300 s)
    ])
    if loglikelihood not in LOGLIKELIHOOD_MODES:
        raise ValueError(f"loglikelihood must be one of {', '.join(LOGLIKELIHOOD_MODES)}, not {loglikelihood!r}")
    module, model = ("pipeline.tools.lm_eval_entry", "modelgate-completions") if loglikelihood == "prefix_cached" \
        else ("lm_eval", "local-completions")
    cmd = [
        sys.executable, "-m", module, "run", "--model", model, "--model_args", model_args,
        "--tasks", ",".join(tasks), "--include_path", str(Path(include_path).resolve()),
        "--output_path", str(raw_dir), "--log_samples", "--seed", "0,1234,1234,1234",
    ]
    if mode.apply_chat_template:
        cmd += ["--apply_chat_template", "--fewshot_as_multiturn", str(mode.fewshot_as_multiturn).lower()]
    if limit is not None:
        cmd += ["--limit", str(int(limit))]
    return cmd


def lmeval_env(api_key: str | None) -> dict[str, str]:
    """lm-eval's environment: no secrets of ours; the endpoint's key as OPENAI_API_KEY (never a user's own)."""
    env = dict(child_env(), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    # the child imports this very pipeline package (pipeline.tools.lm_eval_entry), whatever is installed
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([here, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    if api_key:
        env["OPENAI_API_KEY"] = api_key
    return env


def _stream(proc: subprocess.Popen, log_path: Path, progress: Callable[[str], Any]) -> list[str]:
    """Copy the child's output to ``log_path``; forward lines to ``progress`` (progress bars every 10%)."""
    tail: list[str] = []
    last_pct: dict[str, int] = {}
    buf = b""
    stream = proc.stdout
    assert stream is not None, "the child was started with stdout=PIPE"
    with open(log_path, "ab") as log:
        while True:
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                break
            log.write(chunk)
            buf += chunk
            *lines, buf = re.split(rb"[\r\n]", buf)
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                tail = (tail + [line])[-40:]
                m = _TQDM.search(line)
                if m:
                    label, pct = line[: m.start()], int(m.group(1))
                    if pct < 100 and pct - last_pct.get(label, -100) < 10:
                        continue
                    last_pct[label] = pct
                progress(f"lm-eval: {line}")
    return tail


def mode_groups(tasks: list[str], modes: dict[str, ChatMode] | None) -> list[tuple[ChatMode, list[str]]]:
    """Tasks grouped by prompting mode, in the order of ``tasks`` (lm-eval applies a template per run)."""
    groups: dict[ChatMode, list[str]] = {}
    for task in tasks:
        groups.setdefault((modes or {}).get(task, RAW), []).append(task)
    return list(groups.items())


def run_lmeval(
    base_url: str,
    model_name: str,
    tokenizer_dir: Path,
    tasks: list[str],
    include_path: Path,
    output_dir: Path,
    num_concurrent: int = 4,
    limit: int | None = None,
    progress: Callable[[str], Any] = print,
    api_key: str | None = None,
    timeout_s: float | None = None,
    modes: dict[str, ChatMode] | None = None,
    loglikelihood: str = "prefix_cached",
    prestarted: Prestarted | None = None,
    check_alive: Callable[[], None] | None = None,
) -> LmEvalRun:
    """Run ``tasks`` from ``include_path`` against ``base_url`` (served as ``model_name``).

    Writes lm-eval's raw output under ``output_dir/raw/``, its log to ``output_dir/lm_eval.log``,
    per-item records to ``output_dir/items.jsonl`` and the summary to ``output_dir/lmeval_run.json``.
    ``limit`` caps the items of EACH task (lm-eval's ``--limit``). ``modes`` (task -> ChatMode, default raw):
    tasks with different modes run as separate lm-eval invocations on the same server, one after the other,
    merged into one LmEvalRun (``commands`` holds each). Raises BadInput for unknown tasks,
    InfraError if lm-eval fails, Interrupted on KeyboardInterrupt (the child group is stopped first).
    ``api_key`` reaches lm-eval's ``local-completions`` as OPENAI_API_KEY in its environment (it reads no
    other source), never on its command line. ``loglikelihood``: how loglikelihood requests are scored
    (LOGLIKELIHOOD_MODES, see ``build_command``). ``prestarted``: the first invocation, started earlier by
    ``prestart`` with the same arguments (its start-up already done), released now instead of started.
    ``check_alive``: called every half second while lm-eval runs (the server's own check): what it raises stops
    lm-eval at once, instead of lm-eval retrying every request against a server that is gone.
    """
    plan = _plan(base_url, model_name, tokenizer_dir, tasks, include_path, output_dir, num_concurrent=num_concurrent,
                 limit=limit, api_key=api_key, timeout_s=timeout_s, modes=modes, loglikelihood=loglikelihood)
    output_dir, log_path = plan.output_dir, plan.log_path
    if prestarted is None:
        log_path.write_bytes(b"")
    runs: list[LmEvalRun] = []
    t0 = time.monotonic()
    for mode, group, cmd in plan.invocations:
        progress(f"lm-eval: {', '.join(group)} ({mode.label}), num_concurrent={num_concurrent}, limit={limit}, "
                 f"loglikelihood: {loglikelihood}")
        if prestarted is not None and prestarted.cmd == cmd:
            runs.append(prestarted.release(progress, timeout_s, check_alive))
        else:
            runs.append(_run_once(cmd, plan.env, plan.raw_dir, log_path, progress, timeout_s, check_alive))
        prestarted = None
    wall = time.monotonic() - t0
    run = runs[0]
    for other in runs[1:]:
        run.tasks.update(other.tasks)
        run.items += other.items
        run.samples_files.update(other.samples_files)
        run.n_items += other.n_items
        run.eval_time_s = None if run.eval_time_s is None or other.eval_time_s is None \
            else round(run.eval_time_s + other.eval_time_s, 3)
    run.results_files = [r.results_file for r in runs]
    run.commands = [r.command for r in runs]
    run.modes = {t: (modes or {}).get(t, RAW).to_dict() for t in tasks}
    run.wall_time_s = round(wall, 3)
    run.items_per_s = round(run.n_items / wall, 3) if wall > 0 else 0.0
    run.num_concurrent, run.limit = num_concurrent, limit
    run.items_file = str(output_dir / "items.jsonl")
    with open(run.items_file, "w", encoding="utf-8") as fh:
        for it in run.items:
            fh.write(json.dumps(it, sort_keys=True) + "\n")
    (output_dir / "lmeval_run.json").write_text(json.dumps(run.to_dict(), indent=2, default=str) + "\n")
    progress(f"lm-eval: {run.n_items} items in {wall:.1f}s ({run.items_per_s:.2f} items/s): "
             + "; ".join(f"{t} " + ", ".join(f"{k}={v:.3f}" for k, v in s.metrics.items())
                         for t, s in run.tasks.items()))
    return run


def _run_once(cmd: list[str], env: dict[str, str], raw_dir: Path, log_path: Path,
              progress: Callable[[str], Any], timeout_s: float | None,
              check_alive: Callable[[], None] | None) -> LmEvalRun:
    """One lm-eval invocation (its output appended to ``log_path``), parsed."""
    before = set(raw_dir.rglob("results_*.json"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=raw_dir.parent, start_new_session=True, preexec_fn=unblock_in_child)
    tail: list[str] = []

    def read() -> None:
        tail[:] = _stream(proc, log_path, progress)

    reader = threading.Thread(target=read, name="lm-eval-output", daemon=True)
    reader.start()
    rc = _await(proc, _following(reader, check_alive))
    return _finished(cmd, rc, tail, raw_dir, before, log_path, timeout_s)


def _following(reader: threading.Thread, check_alive: Callable[[], None] | None) -> Callable[[], None]:
    """Wait for the thread copying the child's output, in steps (so Ctrl-C gets through), checking the server
    between steps: what `check_alive` raises ends the wait (and, through `_await`, the child)."""
    def follow() -> None:
        while reader.is_alive():
            reader.join(timeout=0.5)
            if check_alive is not None:
                check_alive()
    return follow


def _await(proc: subprocess.Popen, follow: Callable[[], None]) -> int:
    """Run `follow()` (waiting for the child's output to end) and wait for the child; its exit code. On Ctrl-C
    (Interrupted) or any other exception the child's group is stopped first."""
    try:
        follow()
        return proc.wait()
    except KeyboardInterrupt:
        stop_group(proc)
        raise Interrupted("SIGINT") from None
    except BaseException:
        stop_group(proc)
        raise


def _finished(cmd: list[str], rc: int, tail: list[str], raw_dir: Path, before: set[Path], log_path: Path,
              timeout_s: float | None) -> LmEvalRun:
    if rc != 0:
        limits = f" (per-request timeout serving.request_timeout_s={timeout_s:g} s, {MAX_RETRIES} attempts)" \
            if timeout_s else ""
        raise InfraError(f"lm-eval exited with {rc}{limits}; see {log_path}: " + " | ".join(tail[-5:]))
    new = sorted(set(raw_dir.rglob("results_*.json")) - before)
    if not new:
        raise InfraError(f"lm-eval wrote no results file under {raw_dir}")
    run = parse_output(new[-1])
    run.command = cmd
    return run


class _Relay:
    """Progress lines of a prestarted run, held until its stage attaches its own progress, then forwarded."""

    def __init__(self) -> None:
        self.held: list[str] = []
        self.target: Callable[[str], Any] | None = None
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            if self.target is None:
                self.held.append(line)
            else:
                self.target(line)

    def attach(self, target: Callable[[str], Any]) -> None:
        with self.lock:
            for line in self.held:
                target(line)
            self.held.clear()
            self.target = target


class Prestarted:
    """The first lm-eval invocation of a stage, started before the stage (the gate starts it while vLLM boots) so
    its imports, task building and tokenizing overlap the boot; the model class holds its first
    request until `release()` creates the go file (GO_ENV, pipeline.tools.lm_eval_entry). Only the
    prefix-cached model class (ours) can hold; `stop()` (the gate's cleanup) ends it if it was never released."""

    def __init__(self, cmd: list[str], env: dict[str, str], raw_dir: Path, log_path: Path) -> None:
        self.cmd, self.raw_dir, self.log_path = cmd, raw_dir, log_path
        self.go_file = raw_dir.parent / ".lm_eval.go"
        self.go_file.unlink(missing_ok=True)
        self.before = set(raw_dir.rglob("results_*.json"))
        self.relay = _Relay()
        self.tail: list[str] = []
        self.started = time.monotonic()
        self.lead_s: float | None = None  # how long it had been starting when released
        # at a lower priority while it waits: started during the boot, its imports must not slow vLLM's own
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**env, GO_ENV: str(self.go_file)}, cwd=raw_dir.parent,
                                     start_new_session=True, preexec_fn=_waiting_child)
        self.reader = threading.Thread(target=self._read, name="lm-eval-output", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        self.tail = _stream(self.proc, self.log_path, self.relay)

    def release(self, progress: Callable[[str], Any], timeout_s: float | None,
                check_alive: Callable[[], None] | None = None) -> LmEvalRun:
        self.lead_s = round(time.monotonic() - self.started, 3)
        try:  # back to normal priority for its requests (lowering niceness needs root or CAP_SYS_NICE)
            os.setpriority(os.PRIO_PGRP, self.proc.pid, os.getpriority(os.PRIO_PROCESS, 0))
        except OSError:
            progress("lm-eval: could not restore its priority (no CAP_SYS_NICE): it runs at niceness "
                     f"+{WAITING_NICENESS}")
        progress(f"lm-eval: started {self.lead_s:.1f}s before this stage, released now")
        self.relay.attach(progress)
        self.go_file.touch()

        try:
            rc = _await(self.proc, _following(self.reader, check_alive))
        finally:
            self.go_file.unlink(missing_ok=True)
        return _finished(self.cmd, rc, self.tail, self.raw_dir, self.before, self.log_path, timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_group(self.proc)
        self.go_file.unlink(missing_ok=True)


def prestart(base_url: str, model_name: str, tokenizer_dir: Path, tasks: list[str], include_path: Path,
             output_dir: Path, num_concurrent: int = 4, limit: int | None = None, api_key: str | None = None,
             timeout_s: float | None = None, modes: dict[str, ChatMode] | None = None,
             loglikelihood: str = "prefix_cached") -> Prestarted | None:
    """Start the first invocation `run_lmeval` with the same arguments would run, held before its first request;
    None where it cannot be held (the "echo" path runs lm-eval's own model class)."""
    if loglikelihood != "prefix_cached" or not tasks:
        return None
    plan = _plan(base_url, model_name, tokenizer_dir, tasks, include_path, output_dir, num_concurrent=num_concurrent,
                 limit=limit, api_key=api_key, timeout_s=timeout_s, modes=modes, loglikelihood=loglikelihood)
    plan.log_path.write_bytes(b"")
    return Prestarted(plan.invocations[0][2], plan.env, plan.raw_dir, plan.log_path)


@dataclass(frozen=True)
class _Plan:
    """What run_lmeval runs and where, built once for it and for prestart (so a prestarted command is the
    command run_lmeval would run): the output directories, the child environment, one command per mode group."""
    output_dir: Path
    raw_dir: Path
    log_path: Path
    env: dict[str, str]
    invocations: list[tuple[ChatMode, list[str], list[str]]]  # (mode, tasks, command)


def _plan(base_url: str, model_name: str, tokenizer_dir: Path, tasks: list[str], include_path: Path,
          output_dir: Path, *, num_concurrent: int, limit: int | None, api_key: str | None, timeout_s: float | None,
          modes: dict[str, ChatMode] | None, loglikelihood: str) -> _Plan:
    output_dir = Path(output_dir).resolve()
    raw_dir = output_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    resolve_task_yamls(include_path, tasks)  # fail fast on unknown task names
    invocations = [(mode, group, build_command(base_url, model_name, tokenizer_dir, group, include_path, raw_dir,
                                               num_concurrent=num_concurrent, limit=limit, timeout_s=timeout_s,
                                               mode=mode, loglikelihood=loglikelihood))
                   for mode, group in mode_groups(tasks, modes)]
    return _Plan(output_dir, raw_dir, output_dir / "lm_eval.log", lmeval_env(api_key), invocations)
