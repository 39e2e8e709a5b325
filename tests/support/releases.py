"""release.yaml for tests: one writer, `write_release`, with options per section; the demo hub's pin.

    write_release(tmp_path)                                   # VALID_RELEASE as is
    write_release(tmp_path, model="sync-down", gates={...})   # with a model name and gates
    write_release(tmp_path, "schema_version: 1\\n...")          # text, verbatim (bad input)
    write_demo_release(team, manifest, "degraded", gates={...}, serving={"startup_timeout_s": 3})
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import REPO

VALID_RELEASE: dict[str, Any] = {
    "schema_version": 1,
    "model": {"name": "support-bot"},
    "candidate": {
        "source": "git",
        "repo": "hub/model",
        "revision": "0123456789abcdef0123456789abcdef01234567",
        "files": {"config.json": "a" * 64, "model.safetensors": "b" * 64},
    },
    "serving": {"dtype": "bfloat16", "max_model_len": 1024, "enforce_eager": True},
}

DEMO_MODEL = "smollm2-support-test"
# test-sized serving of the demo model on CPU. float32: these CPUs (AVX2, no AVX-512 BF16/AMX) emulate bfloat16;
# measured on 2 cores, one quality gate (44 prompt cases, 2 x 30 lm-eval items): bfloat16 format 143 s, evals 302 s;
# float32 format 34 s, evals 57 s
# On CPU, vLLM runs its model worker in a process of its own (the `mp` executor: one more spawn and import of torch
# and vLLM, ~12 s of every boot on this machine) unless VLLM_ENABLE_V1_MULTIPROCESSING=0 lets the `uni` executor run
# it inside the engine core (the API server keeps its engine core process either way). Measured 2026-12-07, demo
# model, eager, float32, 1 GiB KV cache excluded: boot to /health 86-88 s mp vs 73-75 s uni; decoding the same or
# faster (4 concurrent: 35-36 vs 35-48 output tok/s). The tests boot vLLM ~25 times.
SINGLE_PROCESS_WORKER = {"extra_args": ["--distributed-executor-backend", "uni"],
                         "env": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}}
DEMO_SERVING = {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024, "startup_timeout_s": 300,
                "extra_args": SINGLE_PROCESS_WORKER["extra_args"],
                "env": {"VLLM_CPU_KVCACHE_SPACE": "1", **SINGLE_PROCESS_WORKER["env"]}}


def release_data(base: Mapping[str, Any] = VALID_RELEASE, *, model: str | Mapping[str, Any] | None = None,
                 **sections: Any) -> dict[str, Any]:
    """A copy of `base` with top-level sections replaced (`gates={...}`) or removed (`serving=None`);
    `model` may be just the name."""
    data = copy.deepcopy(dict(base))
    if model is not None:
        data["model"] = {"name": model} if isinstance(model, str) else dict(model)
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = copy.deepcopy(value)
    return data


def write_release(directory: Path, data: Mapping[str, Any] | str | None = None, *, name: str = "release.yaml",
                  **options: Any) -> Path:
    """Write directory/<name> (the directory is created): `data` (default VALID_RELEASE) with `options` as in
    `release_data`, or `data` as text, verbatim. Returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(data, str):
        assert not options, "options apply to a mapping, not to verbatim text"
        path.write_text(data)
    else:
        path.write_text(yaml.safe_dump(release_data(VALID_RELEASE if data is None else data, **options),
                                       sort_keys=False))
    return path


def demo_candidate(manifest: Mapping[str, Any], variant: str = "instruct") -> dict[str, Any]:
    """The pin of a demo hub variant (manifest: what `publish_demo_hub` returns)."""
    v = manifest["variants"][variant]
    return {"source": "git", "repo": manifest["repo_path"], "revision": v["revision"], "files": v["files"]}


def write_demo_release(directory: Path, manifest: Mapping[str, Any], variant: str = "instruct", *,
                       model: str | Mapping[str, Any] = DEMO_MODEL, serving: Mapping[str, Any] | None = None,
                       **sections: Any) -> Path:
    """release.yaml pinning a demo hub variant with test-sized serving (`serving` adds to DEMO_SERVING)."""
    return write_release(directory, model=model, candidate=demo_candidate(manifest, variant),
                         serving={**DEMO_SERVING, **(serving or {})}, **sections)


def copy_project_inputs(team: Path, *names: str) -> None:
    """Copy the project's own input directories (`prompts`, `evalsets`) into a team repository."""
    for name in names:
        shutil.copytree(REPO / name, team / name, ignore=shutil.ignore_patterns("__pycache__"))
