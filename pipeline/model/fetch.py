"""Fetch a pin into the local model cache and verify every file against the lock.

The cache lives under `<home>/models/<key>/`, where key is a digest of the revision and the locked file
digests. A directory is trusted again only through its marker file, which records each file's sha256, size
and mtime: a fetch of an already-verified pin is a stat() per file (well under a second), and a file touched
since verification is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.release import Pin
from pipeline.errors import DigestMismatch, PinError
from pipeline.model import safety, sources
from pipeline.model.digests import digest_tree, sha256_file
from pipeline.util.progress import Progress

MARKER = ".modelgate-verified.json"


@dataclass(frozen=True)
class ModelDir:
    path: Path
    pin: Pin
    files: dict[str, str]  # relative path -> verified sha256
    cache_hit: bool


def cache_key(pin: Pin) -> str:
    blob = json.dumps({"revision": pin.revision, "files": pin.files}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def compare_digests(expected: dict[str, str], actual: dict[str, str], *, file: str) -> None:
    """Raise DigestMismatch naming the first wrong, missing or unexpected file."""
    for name in sorted(expected):
        if name not in actual:
            raise DigestMismatch(f"file {name!r} is locked but missing from the download", file=file,
                                 path=f"candidate.files.{name}")
        if actual[name] != expected[name]:
            raise DigestMismatch(f"sha256 mismatch for {name!r}: locked {expected[name][:16]}..., "
                                 f"downloaded {actual[name][:16]}... (the file was changed or tampered with)",
                                 file=file, path=f"candidate.files.{name}")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise DigestMismatch(f"file(s) not in the lock: {', '.join(extra)} (re-run `modelgate lock` after review)",
                             file=file, path="candidate.files")


def _stats(root: Path, names) -> dict[str, list[int]]:
    out = {}
    for name in names:
        st = (root / name).stat()
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


def _cached(target: Path, pin: Pin) -> ModelDir | None:
    marker = target / MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if data.get("revision") != pin.revision or data.get("files") != pin.files:
        return None
    try:
        stats = _stats(target, pin.files)
    except OSError:
        return None
    changed = [n for n in pin.files if stats[n] != data.get("stats", {}).get(n)]
    for name in changed:  # touched since verification: hash again rather than trust
        if sha256_file(target / name) != pin.files[name]:
            return None
    present = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} - {MARKER}
    if present != set(pin.files):
        return None
    return ModelDir(path=target, pin=pin, files=dict(pin.files), cache_hit=True)


def fetch(pin: Pin, location: str, home: Path, *, file: str, allowlist=(),
          progress: Progress = print) -> ModelDir:
    """Return a verified local copy of `pin`; `location` is where the source lives (git URL/path or HF id)."""
    if not pin.files:
        raise PinError("the pin has no file digests (candidate.files is empty): run `modelgate lock` "
                       "to record the sha256 of every file of this revision", file=file, path="candidate.files")
    safety.check_file_list(pin, pin.files, file=file)
    safety.check_remote_code(pin, None, allowlist, file=file)
    models = home / "models"
    target = models / cache_key(pin)
    hit = _cached(target, pin)
    if hit:
        progress(f"cache hit: {pin.short} already verified at {target}")
        return hit
    staging = models / f".staging-{target.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        sources.download(location, pin, staging, progress, file=file)
        progress(f"verifying sha256 of {len(pin.files)} file(s)")
        actual = digest_tree(staging)
        safety.check_file_list(pin, actual, file=file)
        compare_digests(pin.files, actual, file=file)
        safety.check_remote_code(pin, staging, allowlist, file=file)
        marker = {"revision": pin.revision, "repo": pin.repo, "files": pin.files,
                  "stats": _stats(staging, pin.files)}
        (staging / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ModelDir(path=target, pin=pin, files=dict(pin.files), cache_hit=False)


def download_unverified(pin: Pin, location: str, dest: Path, *, file: str,
                        progress: Progress = print) -> dict[str, str]:
    """For `modelgate lock`: download a revision and return the digest of every file it holds."""
    shutil.rmtree(dest, ignore_errors=True)
    sources.download(location, pin, dest, progress, file=file)
    return digest_tree(dest)
