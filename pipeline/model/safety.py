"""What the pipeline refuses to load: pickle weights and remote code, unless release.yaml says otherwise."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from pathlib import Path

from pipeline.config.release import PICKLE_SUFFIXES, Pin
from pipeline.errors import UnsafeModel


def pickle_files(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if n.lower().endswith(PICKLE_SUFFIXES))


def check_file_list(pin: Pin, names: Iterable[str], *, file: str) -> None:
    """Refuse pickle weight files unless the pin sets allow_pickle: loading a pickle runs arbitrary code."""
    found = pickle_files(names)
    if found and not pin.allow_pickle:
        raise UnsafeModel(
            f"pickle weight file(s) {', '.join(found)} refused: unpickling can run arbitrary code; "
            "ship safetensors, or set candidate.allow_pickle: true to accept the risk",
            file=file, path="candidate.files")


def needs_remote_code(model_dir: Path) -> bool:
    """A config.json with `auto_map` asks the loader to import Python files shipped with the weights."""
    config = model_dir / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data.get("auto_map"))


def check_remote_code(pin: Pin, model_dir: Path | None, allowlist: Collection[str], *, file: str) -> None:
    if pin.trust_remote_code and pin.repo not in allowlist:
        raise UnsafeModel(
            f"trust_remote_code is refused for {pin.repo!r}: it is not in security.remote_code_allowlist "
            "(remote code runs with the pipeline's credentials)", file=file, path="candidate.trust_remote_code")
    if model_dir is not None and needs_remote_code(model_dir) and not pin.trust_remote_code:
        raise UnsafeModel(
            "the model needs remote code (config.json has auto_map) but candidate.trust_remote_code is false; "
            "review the code, allowlist the repo under security.remote_code_allowlist and set it to true",
            file=file, path="candidate.trust_remote_code")
