"""`modelgate lock`: record the sha256 of every file of a pin in release.yaml (candidate.files).

The file is edited as text, only inside the `candidate:` block, so comments and layout elsewhere survive;
the result is validated again before it replaces the original.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from pipeline.config.release import build_release, load_yaml, revision_problem, validate
from pipeline.errors import ConfigError, PinError
from pipeline.model.fetch import download_unverified
from pipeline.util.progress import Progress


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block_end(lines: list[str], start: int, parent_indent: int) -> int:
    """Index after the last line that belongs to the block opened at `start`."""
    end = start + 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and not line.lstrip().startswith("#") and _indent(line) <= parent_indent:
            break
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # leave trailing blank lines outside
        end -= 1
    return end


def rewrite_candidate(text: str, revision: str, files: dict[str, str], *, file: str) -> str:
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if re.match(r"^candidate:\s*(#.*)?$", ln)), None)
    if start is None:
        raise ConfigError("no top-level `candidate:` block to write the lock into", file=file, path="candidate")
    end = _block_end(lines, start, 0)
    body = lines[start + 1:end]
    child = min((_indent(ln) for ln in body if ln.strip() and not ln.lstrip().startswith("#")), default=2)
    pad = " " * child
    rendered = [f"{pad}files:"] + [f'{pad}  "{name}": {digest}' for name, digest in sorted(files.items())]
    out, i, wrote_files = [], 0, False
    while i < len(body):
        line = body[i]
        if _indent(line) == child and re.match(r"\s*revision:", line):
            out.append(f"{pad}revision: {revision}")
        elif _indent(line) == child and re.match(r"\s*files:", line):
            out.extend(rendered)
            wrote_files = True
            i = _block_end(body, i, child)
            continue
        else:
            out.append(line)
        i += 1
    if not wrote_files:
        out.extend(rendered)
    new = lines[:start + 1] + out + lines[end:]
    return "\n".join(new) + "\n"


def lock(config: Path, home: Path, revision: str | None = None,
         progress: Progress = print) -> dict[str, str]:
    """Download the pin (at `revision` if given), hash every file, write candidate.files; returns the lock."""
    import yaml

    path = Path(config).resolve()
    data = load_yaml(path)
    if revision is not None:
        if not re.fullmatch(r"[0-9a-f]{40}", revision):
            raise PinError(revision_problem(revision), file="--revision")
        if isinstance(data, dict) and isinstance(data.get("candidate"), dict):
            data["candidate"] = {**data["candidate"], "revision": revision, "files": {}}
    validate(data, str(path))
    release = build_release(data, path)
    pin = release.candidate
    dest = home / "lock" / f"{pin.revision}-{os.getpid()}"
    try:
        files = download_unverified(pin, release.repo_location(pin), dest, file=str(release.path),
                                    progress=progress)
    finally:
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
    text = rewrite_candidate(release.path.read_text(encoding="utf-8"), pin.revision, files, file=str(release.path))
    data = yaml.safe_load(text)
    validate(data, str(release.path))
    build_release(data, release.path)
    fd, tmp = tempfile.mkstemp(dir=release.path.parent, prefix=".release-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, release.path)
    return files

