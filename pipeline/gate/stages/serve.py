"""Stage 2: serve the candidate on staging (one vLLM boot shared by every later stage) and smoke-probe it.

In `external` mode the endpoint is an already running OpenAI-compatible server (a staging deployment);
nothing is spawned and the probe checks that it serves the expected model name.

Whose fault a non-pass is:
- the server does not start: serving/startup.py reads its log. The candidate's own files failing to load
  (config, weights, tokenizer, chat template) reject it (`failed`, "does not load: <first error line>");
  the environment's faults are `error` (exit 3). When the log does not tell, a differential check decides:
  the production pin is booted on the same machine with the same serving settings; if it starts, the
  candidate is at fault (`failed`), if it fails too or there is no production version, `error`.
- the smoke probe: transport faults are `error`; an error answer the probe lays at the candidate's door
  (serving/probe.py: 400/422/500 from a live server) is `failed`; whatever the model answered otherwise
  (empty, cut at max_tokens, garbage) passes with a note and is judged by the quality stages.
Every outcome keeps the evidence: the probe's answers, the server log (artifact) and its tail (details).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config.release import Pin, Serving
from pipeline.core.result import StageResult, Status
from pipeline.core.rundir import SERVER_LOG
from pipeline.errors import InfraError, ServerError, StartupError
from pipeline.gate.context import GateContext
from pipeline.model.fetch import fetch
from pipeline.serving import startup
from pipeline.serving.probe import ProbeResult, probe
from pipeline.serving.vllm_server import Endpoint, VllmServer, log_tail
from pipeline.util.progress import Progress, progress_for
from pipeline.util.secrets import register_secret_value

NAME = "serve"
PRODUCTION_LOG = "production-server.log"  # the differential check's boot of the production pin


def external_api_key(serving: Serving) -> str | None:
    """An external endpoint keeps its own key: the value of serving.api_key_env (checked by the gate's input
    check), registered as a secret; None when the endpoint needs none."""
    if not serving.api_key_env:
        return None
    key = os.environ.get(serving.api_key_env) or None
    register_secret_value(key)
    return key


def verify_model_bytes(ctx: GateContext, progress: Progress) -> dict[str, float]:
    """Wait for the background hash of a cached model (started by the fetch stage, overlapped with the boot):
    no result counts before every byte being served was hashed in this run. A changed file raises
    DigestMismatch (exit 2). Returns the hashing metrics (seconds, GB/s, and how long the gate waited)."""
    verification = ctx.model_dir.verification if ctx.model_dir is not None else None
    if verification is None:
        return {}
    t0 = time.monotonic()
    seconds = verification.wait()
    waited = time.monotonic() - t0
    progress(f"model bytes hashed again: {verification.bytes / 1e9:.2f} GB in {seconds:.1f}s "
        f"({verification.gb_per_s:.2f} GB/s; waited {waited:.1f}s after the boot)")
    return {"hash_s": seconds, "hash_gb_per_s": verification.gb_per_s, "hash_wait_s": waited}


def warm_up(ctx: GateContext, endpoint: Endpoint) -> None:
    """Start the later stages' clients (ctx.warm_up: lm-eval, see gate/run.py) now that the endpoint's address
    is known, so their start-up overlaps the boot; each one that fails is left to its own
    stage, which meets the same failure and reports it by cause."""
    previous, ctx.endpoint = ctx.endpoint, endpoint  # set for good only once the server is healthy
    try:
        for start in ctx.warm_up:
            with contextlib.suppress(Exception):
                start(ctx)
    finally:
        ctx.endpoint = previous


def run(ctx: GateContext) -> StageResult:
    release = ctx.release
    progress = progress_for(NAME)
    served_name = release.served_name(release.candidate)
    serving = release.serving
    if serving.mode == "external":
        url = serving.external_url or ""  # set: the config requires it in external mode
        endpoint = Endpoint.external(url, served_name, external_api_key(serving), serving.request_timeout_s)
        warm_up(ctx, endpoint)
    else:
        server = VllmServer(ctx.model_dir.path, served_name, serving, ctx.files.server_log,
                            enforce_eager=ctx.enforce_eager, progress=progress, api_key=ctx.api_key)
        # registered before start so an interrupt during start-up still tears it down
        ctx.cleanup.callback(server.stop)
        ctx.server = server
        try:
            endpoint = server.start(on_started=lambda started: warm_up(ctx, started))
        except StartupError as exc:
            ctx.cleanup_warm_up()  # nothing will use them; the machine must be free for a differential boot
            verify_model_bytes(ctx, progress)  # bytes changed since verification are the cause (exit 2), if so
            server.stop()  # a timed-out server still runs; the machine must be free for a differential boot
            return does_not_start(ctx, exc, progress)
        except Exception:
            verify_model_bytes(ctx, progress)
            raise
    ctx.endpoint = endpoint
    hashing = verify_model_bytes(ctx, progress)
    details: dict[str, Any] = {"served_name": served_name, "base_url": endpoint.base_url, "mode": serving.mode,
                               "pid": endpoint.pid}
    artifacts = {SERVER_LOG: str(endpoint.log_file)} if endpoint.log_file else {}
    progress(f"smoke probe: chat + streamed completion on {served_name}")
    try:
        result = probe(endpoint.base_url, served_name, serving.probe.prompt, serving.probe.max_tokens,
                       timeout_s=serving.request_timeout_s, api_key=endpoint.api_key)
    except InfraError as exc:
        return errored(ctx, _dead_server(ctx) or exc, details, artifacts, hashing)
    details["served_models"] = result.served_models
    details["probe"] = result.evidence(serving.probe.prompt, serving.probe.max_tokens)
    if result.refusals:
        dead = _dead_server(ctx)  # a 5xx from a server that died is the environment's
        if dead is not None:
            return errored(ctx, dead, details, artifacts, hashing)
        progress("the candidate's answer to the smoke probe was an error: " + result.refusals[0].line())
        if endpoint.log_file:
            details["log_tail"] = log_tail(endpoint.log_file)
        return StageResult(NAME, Status.FAILED, metrics=hashing, artifacts=artifacts, details=details,
                           reasons=[f"the candidate failed the smoke probe: {r.line()}" for r in result.refusals])
    ttft = f"; streamed TTFT {result.stream_ttft_s * 1000:.0f} ms" if result.stream_ttft_s is not None else ""
    progress(f"probe answered in {result.chat_latency_s:.2f}s{ttft}")
    for note in result.notes:
        progress(f"note: {note} (recorded; the quality stages judge it)")
    return StageResult(
        name=NAME, status=Status.PASSED, metrics={**probe_metrics(result), **hashing},
        reasons=[f"{served_name} answered a chat and a streamed completion", *result.notes],
        artifacts=artifacts, details=details,
    )


def probe_metrics(result: ProbeResult) -> dict[str, float]:
    metrics = {"probe_chat_latency_s": result.chat_latency_s, "probe_stream_total_s": result.stream_total_s}
    if result.stream_ttft_s is not None:
        metrics["probe_ttft_s"] = result.stream_ttft_s
    if "completion_tokens" in result.chat_usage:
        metrics["probe_completion_tokens"] = float(result.chat_usage["completion_tokens"])
    return metrics


def _dead_server(ctx: GateContext) -> ServerError | None:
    """The spawned server's death, when it died (the better explanation of a failed request)."""
    if ctx.server is None:
        return None
    try:
        ctx.server.check_alive()
    except ServerError as exc:
        return exc
    return None


def errored(ctx: GateContext, exc: InfraError, details: dict[str, Any], artifacts: dict[str, str],
            metrics: dict[str, float]) -> StageResult:
    """An infrastructure error that keeps its evidence: the server log and its tail, what the probe saw."""
    log_file = getattr(exc, "log_file", None) or artifacts.get(SERVER_LOG)
    details = {**details, "log_tail": getattr(exc, "log_tail", "") or log_tail(Path(log_file) if log_file else None)}
    return StageResult(NAME, Status.ERROR, metrics=metrics, reasons=[exc.one_line()], details=details,
                       artifacts={**artifacts, **({SERVER_LOG: log_file} if log_file else {})})


Boot = Callable[[GateContext, Pin, Path, Progress], tuple[bool, str, str]]


def boot_production(ctx: GateContext, pin: Pin, log_file: Path, progress: Progress) -> tuple[bool, str, str]:
    """The differential check: fetch the production pin and boot it with the candidate's serving settings on
    this machine. (True, how, log tail) when it became healthy (it is stopped at once; the tail is the log's as
    it became healthy, not its shutdown), (False, why, log tail) when it did not."""
    release = ctx.release
    model_dir = fetch(pin, release.repo_location(pin), ctx.home, file=f"{release.path} (production baseline)",
                      allowlist=release.remote_code_allowlist, progress=progress)
    server = VllmServer(model_dir.path, release.served_name(pin), release.serving, log_file,
                        enforce_eager=ctx.enforce_eager, progress=progress, api_key=ctx.api_key)
    try:
        with server:
            return True, "it became healthy", log_tail(log_file)
    except StartupError as exc:
        return False, exc.one_line(), exc.log_tail


def does_not_start(ctx: GateContext, exc: StartupError, progress: Progress,
                   boot: Boot = boot_production) -> StageResult:
    """The server did not start: the candidate's fault (`failed`, "does not load: ...") or the environment's
    (`error`), decided from the log (serving/startup.py), else by booting the production pin (module doc)."""
    log_path = Path(exc.log_file) if exc.log_file else None
    text = ""
    if log_path is not None:
        try:
            text = log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
    found = startup.diagnose(text, returncode=exc.returncode, timed_out=exc.timed_out)
    first = found.first_error or exc.one_line()
    excerpt = startup.root_excerpt(text)
    tail = exc.log_tail
    if excerpt and found.first_error and found.first_error not in tail:  # the root cause first, then the end
        tail = f"{excerpt}\n[...]\n" + "\n".join(tail.splitlines()[-10:])
    details: dict[str, Any] = {"log_tail": tail, "load_failure": {
        "cause": found.cause, "first_error": found.first_error, "why": found.why, "decided_by": "server log",
        "server": exc.one_line()}}
    artifacts = {SERVER_LOG: str(log_path)} if log_path else {}
    progress(f"{exc.one_line()}: {found.why}")
    if found.cause == startup.CANDIDATE:
        return StageResult(NAME, Status.FAILED, details=details, artifacts=artifacts,
                           reasons=[f"does not load: {first}", f"decided by the server log: {found.why}"])
    if found.cause == startup.ENVIRONMENT:
        line = f": {found.first_error}" if found.first_error else ""
        return StageResult(NAME, Status.ERROR, details=details, artifacts=artifacts,
                           reasons=[f"{exc.one_line()}: the environment's fault ({found.why}){line}"])
    release = ctx.release
    baseline = ctx.baseline_store.production(release.model_name) if ctx.baseline_store else None
    unexplained = (f"{exc.one_line()} ({found.first_error or 'no error line in the log'}); the log does not "
                   f"tell whose fault it is ({found.why})")
    if baseline is None or baseline.pin.revision == release.candidate.revision:
        why = "there is no production version" if baseline is None else "the candidate is the production pin"
        details["load_failure"]["decided_by"] = "no differential check possible"
        return StageResult(NAME, Status.ERROR, details=details, artifacts=artifacts,
                           reasons=[f"{unexplained}, and {why} to boot for a differential check: treated as "
                                    "an infrastructure failure"])
    production_log = ctx.files.stage(NAME) / PRODUCTION_LOG
    progress(f"differential check: booting production v{baseline.version} ({baseline.pin.short}) with the same "
             "serving settings")
    booted, how, production_tail = boot(ctx, baseline.pin, production_log, progress)
    details["load_failure"].update({"decided_by": "differential check", "production_version": baseline.version,
                                    "production_revision": baseline.pin.revision, "production_booted": booted,
                                    "production_outcome": how})
    if production_tail:
        details["production_log_tail"] = production_tail  # the other side of the comparison
    if production_log.exists():
        artifacts[PRODUCTION_LOG] = str(production_log)
    if booted:
        return StageResult(NAME, Status.FAILED, details=details, artifacts=artifacts, reasons=[
            f"does not load: {first}",
            f"decided by a differential check: production v{baseline.version} ({baseline.pin.short}) started on "
            f"this machine with the same serving settings, the candidate did not ({found.why})"])
    return StageResult(NAME, Status.ERROR, details=details, artifacts=artifacts, reasons=[
        f"{unexplained}; production v{baseline.version} ({baseline.pin.short}) failed to start too with the same "
        f"serving settings (differential check: {how}): an infrastructure failure"])
