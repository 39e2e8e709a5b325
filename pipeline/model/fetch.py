"""Fetch a pin into the local model cache and verify every file against the lock.

The cache lives under `<home>/models/<key>/`, where key is a digest of the revision and the locked file
digests (content-addressed: the same bytes from two sources are one entry). It is read-only on disk. An entry
is used again only through its marker file, which records each file's sha256, size, mtime, inode and ctime: a
file whose identity moved is hashed at once (different bytes: exit 2, "changed since it was verified"), and
every file is hashed again on every fetch anyway (in the background during a gate, overlapped with the vLLM
boot), so a gate never serves bytes it has not hashed itself. A cache hit is used only after the source has said
it still serves the pinned revision (a download asks it by fetching that revision).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.release import Pin
from pipeline.errors import DigestMismatch, InfraError, PinError
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
    # a cache hit's background re-hash (None: every byte was hashed while fetching); wait before results count
    verification: Verification | None = None

    def verified(self) -> float | None:
        """Wait for the background hash (seconds it took), raising DigestMismatch if a file changed."""
        return self.verification.wait() if self.verification else None


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


def _stats(root: Path, names: Iterable[str]) -> dict[str, list[int]]:
    """What a file's identity on disk is, besides its bytes: size, mtime, inode and ctime. An edit that keeps
    size and mtime (``touch -d``) still changes the ctime; replacing the file changes the inode."""
    out = {}
    for name in names:
        st = (root / name).stat()
        out[name] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    return out


def _set_read_only(root: Path) -> None:
    """Everything below `root` read-only on disk (files 0444, directories 0555): an ordinary write fails.
    `root` itself is left writable for the marker; the caller closes it last."""
    for path in sorted(root.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() and not path.is_symlink() else 0o444)


def _remove(path: Path) -> None:
    """rmtree for a read-only cache entry (directories need their write bit back first)."""
    if not path.exists():
        return
    for d in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
        with contextlib.suppress(OSError):
            d.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


def changed_since_verified(name: str, target: Path, expected: str, actual: str, *, file: str) -> DigestMismatch:
    return DigestMismatch(f"{name!r} in the model cache changed since it was verified: sha256 {actual[:16]}... "
                          f"is not the locked {expected[:16]}... (remove {target} to fetch it again)",
                          file=file, path=f"candidate.files.{name}")


def _cached(target: Path, pin: Pin, *, file: str) -> bool:
    """The cache entry, if its marker vouches for exactly this pin and file list. A file whose size, mtime, inode
    or ctime moved since verification is hashed now: different bytes are a DigestMismatch (exit 2)."""
    marker = target / MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if data.get("revision") != pin.revision or data.get("files") != pin.files:
        return False
    present = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} - {MARKER}
    if present != set(pin.files):
        return False  # a file deleted or added since: fetch again rather than serve it
    try:
        stats = _stats(target, pin.files)
    except OSError:
        return False
    for name in (n for n in pin.files if stats[n] != data.get("stats", {}).get(n)):
        actual = sha256_file(target / name)
        if actual != pin.files[name]:
            raise changed_since_verified(name, target, pin.files[name], actual, file=file)
    return True


def fetch(pin: Pin, location: str, home: Path, *, file: str, allowlist: Collection[str] = (),
          progress: Progress = print, background: bool = False) -> ModelDir:
    """Return a verified local copy of `pin`; `location` is where the source lives (git URL/path or HF id).

    The source is asked every time whether it still serves the pinned revision: a download asks it by fetching
    that revision, a cache hit asks it before being used. Every byte is hashed in this call: a fresh download is
    hashed as it is verified; a cache hit is hashed again, in a background thread when `background` (the gate
    overlaps it with the vLLM boot and waits for `ModelDir.verification` before any result counts), else before
    returning."""
    if not pin.files:
        raise PinError("the pin has no file digests (candidate.files is empty): run `modelgate lock` "
                       "to record the sha256 of every file of this revision", file=file, path="candidate.files")
    safety.check_file_list(pin, pin.files, file=file)
    safety.check_remote_code(pin, None, allowlist, file=file)
    models = home / "models"
    target = models / cache_key(pin)
    if _cached(target, pin, file=file):
        sources.confirm_revision(location, pin, file=file)  # a download would have found it gone; a hit must ask
        verification = Verification(target, pin.files, file=file)
        progress(f"cache hit: {pin.short} at {target}; hashing every file again "
                 + ("in the background" if background else "now"))
        verification.start()
        if not background:
            verification.wait()
        return ModelDir(path=target, pin=pin, files=dict(pin.files), cache_hit=True, verification=verification)
    staging = models / f".staging-{target.name}-{os.getpid()}"
    _remove(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        sources.download(location, pin, staging, progress, file=file)
        progress(f"verifying sha256 of {len(pin.files)} file(s)")
        actual = digest_tree(staging)
        safety.check_file_list(pin, actual, file=file)
        compare_digests(pin.files, actual, file=file)
        safety.check_remote_code(pin, staging, allowlist, file=file)
        _set_read_only(staging)
        marker = {"revision": pin.revision, "repo": pin.repo, "files": pin.files,
                  "stats": _stats(staging, pin.files)}  # after chmod: the ctime it will keep
        (staging / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
        (staging / MARKER).chmod(0o444)
        staging.chmod(0o555)
        _remove(target)
        os.replace(staging, target)
    finally:
        _remove(staging)
    return ModelDir(path=target, pin=pin, files=dict(pin.files), cache_hit=False)


class Verification:
    """Hash every file of a cache entry against the lock in a thread; `wait()` returns the seconds it took or
    raises the DigestMismatch it found (naming the file, "changed since it was verified")."""

    def __init__(self, root: Path, files: dict[str, str], *, file: str):
        self.root, self.files, self.file = root, dict(files), file
        self.bytes = sum((root / name).stat().st_size for name in files)
        self.seconds: float | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modelgate-verify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            for name, expected in sorted(self.files.items()):
                actual = sha256_file(self.root / name)
                if actual != expected:
                    raise changed_since_verified(name, self.root, expected, actual, file=self.file)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
            self._error = exc
        self.seconds = time.monotonic() - t0

    def wait(self) -> float:
        self._thread.join()
        if isinstance(self._error, OSError):
            raise InfraError(f"cannot read the model cache at {self.root}: {self._error}") from self._error
        if self._error is not None:
            raise self._error
        assert self.seconds is not None
        return self.seconds

    @property
    def gb_per_s(self) -> float:
        return self.bytes / 1e9 / self.seconds if self.seconds else 0.0


def download_unverified(pin: Pin, location: str, dest: Path, *, file: str,
                        progress: Progress = print) -> dict[str, str]:
    """For `modelgate lock`: download a revision and return the digest of every file it holds."""
    _remove(dest)
    sources.download(location, pin, dest, progress, file=file)
    return digest_tree(dest)
