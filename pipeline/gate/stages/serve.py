"""Stage 2: serve the candidate on staging (one vLLM boot shared by every later stage) and smoke-probe it.

In `external` mode the endpoint is an already running OpenAI-compatible server (a staging deployment);
nothing is spawned and the probe checks that it serves the expected model name.
"""

from __future__ import annotations

import time

from pipeline.config.release import Serving
from pipeline.gate.context import GateContext
from pipeline.gate.result import StageResult, Status
from pipeline.gate.rundir import SERVER_LOG
from pipeline.serving.probe import probe
from pipeline.serving.vllm_server import Endpoint, VllmServer
from pipeline.util.progress import Progress, progress_for

NAME = "serve"


def external_api_key(serving: Serving) -> str | None:
    """An external endpoint keeps its own key: the value of serving.api_key_env (checked by the gate's input
    check), registered as a secret; None when the endpoint needs none."""
    import os

    from pipeline.util.secrets import register_secret_value

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


def run(ctx: GateContext) -> StageResult:
    release = ctx.release
    progress = progress_for(NAME)
    served_name = release.served_name(release.candidate)
    serving = release.serving
    if serving.mode == "external":
        url = serving.external_url or ""  # set: the config requires it in external mode
        endpoint = Endpoint(base_url=url.rstrip("/").removesuffix("/v1"),
                            served_name=served_name, log_file=None, pid=None, api_key=external_api_key(serving),
                            request_timeout_s=serving.request_timeout_s)
    else:
        server = VllmServer(ctx.model_dir.path, served_name, serving, ctx.files.server_log,
                            enforce_eager=ctx.enforce_eager, progress=progress, api_key=ctx.api_key)
        # registered before start so an interrupt during start-up still tears it down
        ctx.cleanup.callback(server.stop)
        ctx.server = server
        try:
            endpoint = server.start()
        except Exception:
            verify_model_bytes(ctx, progress)  # bytes changed since verification are the cause (exit 2), if so
            raise
    ctx.endpoint = endpoint
    hashing = verify_model_bytes(ctx, progress)
    progress(f"smoke probe: chat + streamed completion on {served_name}")
    try:
        result = probe(endpoint.base_url, served_name, serving.probe.prompt, serving.probe.max_tokens,
                       timeout_s=serving.request_timeout_s, api_key=endpoint.api_key)
    except Exception:
        if ctx.server is not None:
            ctx.server.check_alive()  # a dead server is the better explanation
        raise
    progress(f"probe answered in {result.chat_latency_s:.2f}s; streamed TTFT {result.stream_ttft_s * 1000:.0f} ms")
    artifacts = {SERVER_LOG: str(endpoint.log_file)} if endpoint.log_file else {}
    return StageResult(
        name=NAME, status=Status.PASSED,
        metrics={"probe_chat_latency_s": result.chat_latency_s, "probe_ttft_s": result.stream_ttft_s,
                 "probe_stream_total_s": result.stream_total_s, **hashing},
        reasons=[f"{served_name} answered a chat and a streamed completion"],
        artifacts=artifacts,
        details={"served_name": served_name, "base_url": endpoint.base_url, "mode": serving.mode,
                 "pid": endpoint.pid, "served_models": result.served_models,
                 "probe": {"prompt": serving.probe.prompt, "chat_text": result.chat_text,
                           "finish_reason": result.chat_finish_reason, "stream_text": result.stream_text,
                           "stream_chunks": result.stream_chunks}},
    )

