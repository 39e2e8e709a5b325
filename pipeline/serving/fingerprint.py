"""What load numbers depend on, read from this machine and from the server's real command line and environment:
the hardware (CPU model and count, GPU model and count), the vLLM version and the serving configuration. Two load
tests are comparable only when their fingerprints match (checks/fingerprint.py compares them)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

# server flags that shape latency and throughput -> fingerprint key (values kept as the server got them)
SERVING_FLAGS = {"--dtype": "dtype", "--quantization": "quantization", "--max-model-len": "max_model_len",
                 "--max-num-seqs": "max_num_seqs", "--max-num-batched-tokens": "max_num_batched_tokens",
                 "--kv-cache-dtype": "kv_cache_dtype", "--gpu-memory-utilization": "gpu_memory_utilization",
                 "--tensor-parallel-size": "tensor_parallel_size",
                 "--pipeline-parallel-size": "pipeline_parallel_size", "--block-size": "block_size",
                 "--swap-space": "swap_space", "--cpu-offload-gb": "cpu_offload_gb",
                 "--kv-cache-memory-bytes": "kv_cache_memory_bytes", "--compilation-config": "compilation"}
SWITCHES = {"--enforce-eager": ("enforce_eager", True),
            "--enable-prefix-caching": ("prefix_caching", True),
            "--no-enable-prefix-caching": ("prefix_caching", False),
            "--enable-chunked-prefill": ("chunked_prefill", True),
            "--no-enable-chunked-prefill": ("chunked_prefill", False)}
# where the model and the server listen, not how it serves: left out
IGNORED_FLAGS = {"--model", "--served-model-name", "--host", "--port", "--api-key"}
# the server environment that sizes the KV cache or the CPU threads
SERVING_ENV = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_ATTENTION_BACKEND", "OMP_NUM_THREADS")


def serving_config(command: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
    """The serving configuration a server was started with, from its real command line (after the module or
    `serve MODEL`) and environment: named flags, switches, every other argument (`other_args`) and the env."""
    args = list(command)
    start = next((i + 1 for i, a in enumerate(args) if a.endswith("api_server") or a == "serve"), 0)
    if start and start < len(args) and args[start - 1] == "serve" and not args[start].startswith("-"):
        start += 1  # `vllm serve MODEL`
    config: dict[str, Any] = {"enforce_eager": False}
    other: list[str] = []
    i = start
    while i < len(args):
        flag, value = args[i], None
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        takes_value = flag in SERVING_FLAGS or flag in IGNORED_FLAGS or (
            flag.startswith("--") and flag not in SWITCHES and i + 1 < len(args) and not args[i + 1].startswith("--"))
        if value is None and takes_value and i + 1 < len(args):
            value, i = args[i + 1], i + 1
        i += 1
        if flag in IGNORED_FLAGS:
            continue
        if flag in SWITCHES:
            key, on = SWITCHES[flag]
            config[key] = on
        elif flag in SERVING_FLAGS:
            config[SERVING_FLAGS[flag]] = value
        else:
            other.append(flag if value is None else f"{flag}={value}")
    if other:
        config["other_args"] = sorted(other)
    config["env"] = {name: env[name] for name in SERVING_ENV if name in env}
    return config


def fingerprint(vllm_version: str, serving: dict[str, Any] | None = None) -> dict[str, Any]:
    """What load numbers depend on: the same model is only comparable on the same hardware, server and serving
    configuration (`serving_config`; None when unknown, e.g. an external endpoint)."""
    cpu_model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu_model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")),
                             cpu_model)
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20)
            gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
        except (OSError, subprocess.TimeoutExpired):
            gpus = []
    return {"cpu_model": cpu_model, "cpu_count": cpus, "gpu_model": sorted(set(gpus))[0] if gpus else None,
            "gpu_count": len(gpus), "vllm": vllm_version, "serving": serving}
