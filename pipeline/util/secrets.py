"""Secrets never leave the process: every string we write (logs, reports, MLflow params) goes through
`redact`, which replaces the value of each secret environment variable, and of each secret value the
pipeline made itself (the staging server's per-gate API key), with `***`.

Child processes (vLLM, lm-eval, the serving benchmark) get `child_env()`: the environment without the
secret variables they have no use for, so they cannot print what they do not have."""

from __future__ import annotations

import os
import secrets as _random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.core.secrets import DEFAULT_SECRET_ENV

_extra_names: set[str] = set()
_extra_values: set[str] = set()
MIN_SECRET_LEN = 6  # shorter values would redact ordinary words
REDACT_MAX_BYTES = 256 * 1024 * 1024  # files larger than this are not scanned


def register_secret_env(names: Iterable[str]) -> None:
    """Add the names from release.yaml's security.secret_env."""
    _extra_names.update(names)


def register_secret_value(value: str | None) -> None:
    """A secret that lives in no environment variable of ours (a generated API key)."""
    if value and len(value) >= MIN_SECRET_LEN:
        _extra_values.add(value)


def new_api_key() -> str:
    """A random API key for one gate's staging server(s); registered as a secret."""
    key = _random.token_urlsafe(32)
    register_secret_value(key)
    return key


def secret_names() -> set[str]:
    return set(DEFAULT_SECRET_ENV) | _extra_names


def secret_values() -> list[str]:
    values = {os.environ.get(n, "") for n in secret_names()} | _extra_values
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, "***")
    return text


def redact_data(data: Any) -> Any:
    """`data` (JSON-like: dicts, lists, strings, numbers) with `redact` applied to every string, keys included.
    Redacting the data, not its JSON text, also catches a secret that JSON would escape (quotes, non-ASCII)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_data(k): redact_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(v) for v in data]
    return data


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) without the secret variables and without OPENAI_API_KEY (a user's real
    OpenAI key must never be sent to a staging endpoint); callers add the endpoint's key explicitly."""
    names = secret_names() | {"OPENAI_API_KEY", "VLLM_API_KEY"}
    return {k: v for k, v in (os.environ if base is None else base).items() if k not in names}


def redact_file(path: Path) -> bool:
    """Rewrite `path` with every secret value replaced; True when something was replaced."""
    values = [v.encode() for v in secret_values()]
    if not values:
        return False
    try:
        if path.stat().st_size > REDACT_MAX_BYTES:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    new = data
    for value in values:
        new = new.replace(value, b"***")
    if new == data:
        return False
    path.write_bytes(new)
    return True


def redact_tree(root: Path) -> list[Path]:
    """redact_file for every regular file under `root`; returns the files that were rewritten."""
    if not secret_values():
        return []
    return [p for p in sorted(Path(root).rglob("*")) if p.is_file() and not p.is_symlink() and redact_file(p)]
