"""Load-test arithmetic, no I/O beyond reading this machine's description: per-level summaries of the serving
benchmark's JSON, SLO checks, the shape of the degradation curve, hardware fingerprints, regressions against
the baseline's load results, and cost per million output tokens.

Rules (documented in README.md, `load` row):
- A level fails when any request failed (more than `slo.max_failed`, default 0) or a configured SLO is missed:
  `p95_e2el_ms`, `p95_ttft_ms`, `p95_tpot_ms` are maxima, `min_output_throughput` (tokens/s) a minimum.
- Curve shape between adjacent levels: with a closed loop of N concurrent clients on a saturated server,
  latency grows about in proportion to N (Little's law) while throughput stays flat. The curve is a *cliff*
  when p95 e2e latency grows more than CLIFF_FACTOR x the concurrency ratio, or output throughput drops by
  more than CLIFF_THROUGHPUT_DROP, between two adjacent levels (the server collapses instead of queueing);
  otherwise *gradual*. The shape is reported, not gated.
- Regression: only when the fingerprints match: the hardware (CPU model and count, GPU model and count, vLLM
  version) and the serving configuration the server was really started with (read from its command line and
  environment: eager or compiled, dtype, quantization, max_model_len, max_num_seqs, KV cache size and dtype,
  tensor/pipeline parallel size, any other server argument). When they differ the comparison is skipped with the
  differing fields named; the SLOs still apply. At a level both ran, the candidate fails when its p95 e2e latency
  is more than `regression_pct` percent above the baseline's, or its output throughput more than `regression_pct`
  percent below.
- Cost: price_per_hour / (output tokens/s x 3600) x 1e6, at the best output throughput of the levels that met
  every SLO (the capacity that can be sold within the SLO); when none did, the best of all levels.
"""

from __future__ import annotations

import itertools
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.config.release import LoadSlo

CLIFF_FACTOR = 1.5
CLIFF_THROUGHPUT_DROP = 0.20
LATENCY_FIELDS = tuple(f"p{p}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for p in (50, 95, 99))
RATE_FIELDS = ("request_throughput", "output_throughput", "total_token_throughput", "duration")


def label(multiplier: float) -> str:
    return f"{multiplier:g}x"


def level_summary(multiplier: float, concurrency: int, result: dict[str, Any],
                  server: dict[str, float] | None = None) -> dict[str, Any]:
    """One level's row: the benchmark's counts, rates and percentiles, plus the server-side gauges."""
    row: dict[str, Any] = {"level": label(multiplier), "multiplier": multiplier, "concurrency": concurrency,
                           "completed": int(result.get("completed", 0)), "failed": int(result.get("failed", 0)),
                           "num_prompts": int(result.get("num_prompts", 0))}
    for key in (*RATE_FIELDS, *LATENCY_FIELDS):
        if isinstance(result.get(key), (int, float)):
            row[key] = float(result[key])
    missing = row["num_prompts"] - row["completed"] - row["failed"]
    if missing > 0:  # requests neither completed nor reported failed still count against the level
        row["failed"] += missing
    row["server"] = dict(server or {})
    return row


def check_level(row: dict[str, Any], slo: LoadSlo) -> list[str]:
    """The SLOs this level missed, each naming the level and the limit."""
    lvl = row["level"]
    out = []
    if row["failed"] > slo.max_failed:
        out.append(f"load {lvl}: {row['failed']} of {row['num_prompts']} request(s) failed "
                   f"(max_failed {slo.max_failed})")
    for key in ("p95_e2el_ms", "p95_ttft_ms", "p95_tpot_ms"):
        limit = getattr(slo, key)
        if limit is None:
            continue
        value = row.get(key)
        if value is None or value > limit:
            shown = "not measured" if value is None else f"{value:.0f}"
            out.append(f"load {lvl}: {key} {shown} > SLO {limit:g}")
    if slo.min_output_throughput is not None:
        value = row.get("output_throughput", 0.0)
        if value < slo.min_output_throughput:
            out.append(f"load {lvl}: output_throughput {value:.1f} tok/s < SLO {slo.min_output_throughput:g}")
    return out


def curve_shape(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """'gradual' or 'cliff' (see the module docstring), with the step that made it a cliff."""
    steps = []
    shape = "gradual" if len(rows) > 1 else "single level"
    for prev, cur in itertools.pairwise(rows):
        load_ratio = cur["concurrency"] / prev["concurrency"]
        lat_ratio = _ratio(cur.get("p95_e2el_ms"), prev.get("p95_e2el_ms"))
        tput_ratio = _ratio(cur.get("output_throughput"), prev.get("output_throughput"))
        cliff = (lat_ratio is not None and lat_ratio > CLIFF_FACTOR * load_ratio) or \
            (tput_ratio is not None and tput_ratio < 1 - CLIFF_THROUGHPUT_DROP)
        steps.append({"from": prev["level"], "to": cur["level"], "concurrency_ratio": round(load_ratio, 3),
                      "p95_e2el_ratio": _round(lat_ratio), "output_throughput_ratio": _round(tput_ratio),
                      "cliff": cliff})
        if cliff:
            shape = "cliff"
    return {"shape": shape, "steps": steps, "cliff_factor": CLIFF_FACTOR,
            "cliff_throughput_drop": CLIFF_THROUGHPUT_DROP}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


# server flags that shape latency and throughput -> fingerprint key (values kept as the server got them)
SERVING_FLAGS = {"--dtype": "dtype", "--quantization": "quantization", "--max-model-len": "max_model_len",
                 "--max-num-seqs": "max_num_seqs", "--max-num-batched-tokens": "max_num_batched_tokens",
                 "--kv-cache-dtype": "kv_cache_dtype", "--gpu-memory-utilization": "gpu_memory_utilization",
                 "--tensor-parallel-size": "tensor_parallel_size",
                 "--pipeline-parallel-size": "pipeline_parallel_size", "--block-size": "block_size",
                 "--swap-space": "swap_space", "--cpu-offload-gb": "cpu_offload_gb"}
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


def fingerprint_differences(candidate: dict[str, Any], baseline: dict[str, Any] | None) -> list[str]:
    """[] when comparable; otherwise one line per differing field (hardware, then `serving.<field>`)."""
    if not baseline:
        return ["the baseline recorded no hardware fingerprint"]
    keys = ("cpu_model", "cpu_count", "gpu_model", "gpu_count", "vllm")
    out = [f"{k}: {baseline.get(k)!r} (baseline) != {candidate.get(k)!r} (candidate)"
           for k in keys if candidate.get(k) != baseline.get(k)]
    mine, theirs = candidate.get("serving"), baseline.get("serving")
    if mine is None or theirs is None:
        which = "the baseline" if theirs is None else "this gate"
        return [*out, f"serving: {which} recorded no serving configuration (cannot tell like from like)"]
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            out.append(f"serving.{key}: {theirs.get(key)!r} (baseline) != {mine.get(key)!r} (candidate)")
    return out


def regressions(rows: list[dict[str, Any]], baseline_rows: list[dict[str, Any]], pct: float) -> list[str]:
    base = {r["level"]: r for r in baseline_rows}
    out = []
    for row in rows:
        b = base.get(row["level"])
        if b is None or b.get("concurrency") != row["concurrency"]:
            continue
        lat, blat = row.get("p95_e2el_ms"), b.get("p95_e2el_ms")
        if lat is not None and blat and lat > blat * (1 + pct / 100):
            out.append(f"load {row['level']}: p95_e2el_ms {lat:.0f} is {100 * (lat / blat - 1):.0f}% above the "
                       f"baseline's {blat:.0f} (regression_pct {pct:g})")
        tput, btput = row.get("output_throughput"), b.get("output_throughput")
        if tput is not None and btput and tput < btput * (1 - pct / 100):
            out.append(f"load {row['level']}: output_throughput {tput:.1f} tok/s is {100 * (1 - tput / btput):.0f}% "
                       f"below the baseline's {btput:.1f} (regression_pct {pct:g})")
    return out


def cost_per_1m_output_tokens(output_throughput: float | None, price_per_hour: float | None) -> float | None:
    if price_per_hour is None or not output_throughput or output_throughput <= 0:
        return None
    return price_per_hour / (output_throughput * 3600.0) * 1e6


def costing_throughput(rows: list[dict[str, Any]], slo: LoadSlo) -> float | None:
    """Best output throughput among levels within every SLO; the best overall when none is."""
    ok = [r["output_throughput"] for r in rows if "output_throughput" in r and not check_level(r, slo)]
    every = [r["output_throughput"] for r in rows if "output_throughput" in r]
    return max(ok or every) if (ok or every) else None
