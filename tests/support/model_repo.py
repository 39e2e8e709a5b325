"""A model repository for tests: files committed to a real git repository, as a hub a pin points at."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from tests.support.git import commit_all

# a tiny model: enough for a pin, the lock and the safety checks (not for serving)
TINY_MODEL = {
    "config.json": '{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8}\n',
    "tokenizer_config.json": '{"model_max_length": 128}\n',
    "model.safetensors": "not really tensors, but bytes with a digest\n",
}


class ModelRepo(NamedTuple):
    path: Path
    revision: str
    digests: dict[str, str]  # file name -> sha256 of every committed file


def build_model_repo(path: Path, files: Mapping[str, str | bytes] = TINY_MODEL) -> ModelRepo:
    """Write `files` (text or bytes) under a new directory `path`, commit them; the repo, its commit and digests."""
    path.mkdir(parents=True)
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        (path / name).write_bytes(data)
    revision = commit_all(path, "model")
    digests = {name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in files}
    return ModelRepo(path, revision, digests)
