"""Are two load tests comparable? Their fingerprints (serving/fingerprint.py: hardware, vLLM version, the serving
configuration the server really ran with) compared field by field, in words a reader knows (`not comparable:
compilation mode differs`) and one detail line per field. Pure: no I/O."""

from __future__ import annotations

from typing import Any


def fingerprint_differences(candidate: dict[str, Any], baseline: dict[str, Any] | None) -> list[str]:
    """[] when comparable; otherwise one line per differing field (hardware, then `serving.<field>`, the server
    environment as `serving.env.<NAME>`)."""
    return [line for _, line in _differences(candidate, baseline)]


# fingerprint field -> the name a reader knows it by (`not comparable: <names> differ`)
HARDWARE_NAMES = {"cpu_model": "CPU model", "cpu_count": "CPU count", "gpu_model": "GPU model",
                  "gpu_count": "GPU count", "vllm": "vLLM version"}
SERVING_NAMES = {"enforce_eager": "compilation mode", "compilation": "compilation mode", "dtype": "dtype",
                 "quantization": "quantization", "max_model_len": "max_model_len", "max_num_seqs": "max_num_seqs",
                 "max_num_batched_tokens": "max_num_batched_tokens", "kv_cache_dtype": "KV cache dtype",
                 "gpu_memory_utilization": "KV cache size", "kv_cache_memory_bytes": "KV cache size",
                 "block_size": "KV cache block size",
                 "swap_space": "swap space", "cpu_offload_gb": "CPU offload",
                 "tensor_parallel_size": "tensor parallel size", "pipeline_parallel_size": "pipeline parallel size",
                 "prefix_caching": "prefix caching", "chunked_prefill": "chunked prefill",
                 "other_args": "extra server args", "env.VLLM_CPU_KVCACHE_SPACE": "KV cache size",
                 "env.VLLM_CPU_OMP_THREADS_BIND": "CPU thread binding", "env.OMP_NUM_THREADS": "CPU threads",
                 "env.VLLM_ATTENTION_BACKEND": "attention backend"}


def _differences(candidate: dict[str, Any], baseline: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(human name, detail line) per differing field, in fingerprint order; the name of what was not recorded
    starts with "!"."""
    if not baseline:
        return [("!the baseline recorded no fingerprint", "the baseline recorded no hardware fingerprint")]
    out = [(HARDWARE_NAMES[k], f"{k}: {baseline.get(k)!r} (baseline) != {candidate.get(k)!r} (candidate)")
           for k in HARDWARE_NAMES if candidate.get(k) != baseline.get(k)]
    mine, theirs = candidate.get("serving"), baseline.get("serving")
    if mine is None or theirs is None:
        which = "the baseline" if theirs is None else "this gate"
        return [*out, (f"!{which} recorded no serving configuration",
                       f"serving: {which} recorded no serving configuration (cannot tell like from like)")]
    flat_mine, flat_theirs = _flat(mine), _flat(theirs)
    for key in sorted(set(flat_mine) | set(flat_theirs), key=lambda k: (k.startswith("env."), k)):
        if flat_mine.get(key) != flat_theirs.get(key):
            name = SERVING_NAMES.get(key, "server environment" if key.startswith("env.") else key)
            out.append((name, f"serving.{key}: {flat_theirs.get(key)!r} (baseline) != {flat_mine.get(key)!r} "
                              "(candidate)"))
    return out


def _flat(serving: dict[str, Any]) -> dict[str, Any]:
    """The serving configuration with its environment spread out as `env.<NAME>`."""
    out = {k: v for k, v in serving.items() if k != "env"}
    out.update({f"env.{name}": value for name, value in (serving.get("env") or {}).items()})
    return out


def not_comparable(candidate: dict[str, Any], baseline: dict[str, Any] | None) -> tuple[str, list[str]] | None:
    """None when the fingerprints match; otherwise ("not comparable: compilation mode differs", the detail
    lines): the human names of the differing fields, each once, then one line per field."""
    diffs = _differences(candidate, baseline)
    if not diffs:
        return None
    names = list(dict.fromkeys(name for name, _ in diffs if not name.startswith("!")))
    parts = []
    if names:
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        parts.append(f"{joined} {'differs' if len(names) == 1 else 'differ'}")
    parts += [name[1:] for name, _ in diffs if name.startswith("!")]
    return "not comparable: " + "; ".join(parts), [line for _, line in diffs]
