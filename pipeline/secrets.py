"""Secrets never leave the process: every string we write (logs, reports, MLflow params) goes through
`redact`, which replaces the value of each secret environment variable with `***`."""

from __future__ import annotations

import os

from .config import DEFAULT_SECRET_ENV

_extra_names: set[str] = set()
MIN_SECRET_LEN = 6  # shorter values would redact ordinary words


def register_secret_env(names) -> None:
    """Add the names from release.yaml's security.secret_env."""
    _extra_names.update(names)


def secret_values() -> list[str]:
    names = set(DEFAULT_SECRET_ENV) | _extra_names
    values = {os.environ.get(n, "") for n in names}
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, "***")
    return text
