"""The demo's release profile: `release.demo.yaml` beside release.yaml, so that the whole lifecycle (a signed gate,
approve, promote, a rejected candidate, a rollback) runs on the demo with no file edited by hand.

It is release.yaml with two changes: `signing` trusts only the keys generated on this machine for the demo
(cli/demo.py: their private halves under the model home's `demo/`, mode 0600, outside git), and the candidate is
pinned to one variant of the demo hub (same repository, that variant's commit and file digests). The file is
written anew by `modelgate demo init` and `modelgate demo gate --variant` and is ignored by git: a team's
committed release.yaml never trusts a key whose private half lives outside its release environment, so a record
the demo signed is refused under it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.yamlio import load_yaml
from pipeline.errors import BadInput

PROFILE = "release.demo.yaml"
HEADER = ("# Written by `modelgate demo` from release.yaml: the demo's own release environment. It trusts signing\n"
          "# keys generated on this machine for the demo only (.modelgate/demo/, mode 0600) and pins a variant of\n"
          "# the demo hub. Never commit it, never copy its `signing` section into release.yaml.\n")


def profile_path(config: Path) -> Path:
    return config.resolve().parent / PROFILE


def current_variant(profile: Path, manifest: Mapping[str, Any]) -> str | None:
    """The demo hub variant the profile pins now (None: no profile, or a pin that is no variant)."""
    try:
        data = load_yaml(profile)
    except (OSError, BadInput):
        return None
    revision = (data.get("candidate") or {}).get("revision") if isinstance(data, dict) else None
    return next((name for name, v in manifest["variants"].items() if v["revision"] == revision), None)


def write_profile(config: Path, manifest: Mapping[str, Any], variant: str, public_keys: list[dict[str, Any]],
                  audit_keys: list[dict[str, Any]]) -> Path:
    """release.demo.yaml from `config`, trusting `public_keys` / `audit_keys` only, pinning `variant` (atomic)."""
    variants = manifest["variants"]
    if variant not in variants:
        raise BadInput(f"no demo hub variant {variant!r} (variants: {', '.join(sorted(variants))})",
                       path="--variant")
    data = load_yaml(config)
    if not isinstance(data, dict) or not isinstance(data.get("candidate"), dict):
        raise BadInput("no `candidate` section to pin a demo variant in", file=str(config), path="candidate")
    pin = variants[variant]
    data["candidate"] = {**data["candidate"], "revision": pin["revision"], "files": dict(pin["files"])}
    data["signing"] = {"public_keys": public_keys, "audit_keys": audit_keys}
    out = profile_path(config)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".release.demo.", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    os.replace(tmp, out)
    return out
