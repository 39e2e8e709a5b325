"""Where model files come from: a git repository at a commit, or the Hugging Face Hub at a commit.

Each source downloads one pin into an empty directory and nothing else; verification is `fetch.py`'s job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.config.release import Pin
from pipeline.errors import InfraError, PinError
from pipeline.util.git import git, git_stream, reason
from pipeline.util.progress import Progress

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"


_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "0"}


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    """A git call whose failure the caller classifies (a missing commit is the pin's fault, bad input)."""
    return git(*args, check=False, env=_GIT_ENV)


def _local_repo(location: str) -> str | None:
    """The git dir of a repository given as a path on this filesystem, else None (URLs, file:// included,
    go through `git fetch`)."""
    path = location
    if "://" in path or not Path(path).is_dir():
        return None
    out = _git("-C", path, "rev-parse", "--absolute-git-dir")
    return out.stdout.strip() if out.returncode == 0 else None


def _archive_local(gitdir: str, pin: Pin, dest: Path, progress: Progress, *, file: str) -> None:
    """A repository on this filesystem: stream the commit's tree out with `git archive` (no pack built)."""
    if _git("--git-dir", gitdir, "cat-file", "-e", f"{pin.revision}^{{commit}}").returncode:
        raise PinError(f"commit {pin.revision} does not exist in {gitdir!r}", file=file, path="candidate.revision")
    progress(f"git archive {gitdir} {pin.revision}")
    dest.mkdir(parents=True, exist_ok=True)
    archive = git_stream("--git-dir", gitdir, "archive", "--format=tar", pin.revision)
    assert archive.stdout is not None and archive.stderr is not None  # both are pipes
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True)
    assert archive.stdout is not None and archive.stderr is not None  # both PIPE
    archive.stdout.close()
    err = archive.stderr.read().decode(errors="replace")
    if archive.wait() or untar.returncode:
        raise InfraError(f"git archive of {pin.revision} failed: {reason(err or untar.stderr.decode())}")


def download_git(location: str, pin: Pin, dest: Path, progress: Progress, *, file: str) -> None:
    """Fetch exactly `pin.revision` from `location` and check its tree out into `dest` (without .git)."""
    local = _local_repo(location)
    if local:
        _archive_local(local, pin, dest, progress, file=file)
        _refuse_lfs_pointers(dest)
        return
    gitdir = dest.parent / (dest.name + ".git")
    shutil.rmtree(gitdir, ignore_errors=True)
    init = _git("init", "--quiet", "--bare", str(gitdir))
    if init.returncode:
        raise InfraError(f"git init failed: {init.stderr.strip()}")
    try:
        progress(f"git fetch {location} {pin.revision}")
        got = _git("--git-dir", str(gitdir), "fetch", "--quiet", "--depth", "1", location, pin.revision)
        if got.returncode:
            # some servers refuse a fetch by sha; fall back to every ref, then look for the commit
            got = _git("--git-dir", str(gitdir), "fetch", "--quiet", location, "+refs/*:refs/remotes/origin/*")
            if got.returncode:
                raise PinError(f"cannot fetch from git repository {location!r}: {reason(got.stderr)}",
                               file=file, path="candidate.repo")
        exists = _git("--git-dir", str(gitdir), "cat-file", "-e", f"{pin.revision}^{{commit}}")
        if exists.returncode:
            raise PinError(f"commit {pin.revision} does not exist in {location!r}", file=file,
                           path="candidate.revision")
        dest.mkdir(parents=True, exist_ok=True)
        out = _git("--git-dir", str(gitdir), "--work-tree", str(dest), "checkout", "--quiet", "--force",
                   pin.revision, "--", ".")
        if out.returncode:
            raise InfraError(f"git checkout of {pin.revision} failed: {reason(out.stderr)}")
    finally:
        shutil.rmtree(gitdir, ignore_errors=True)
    _refuse_lfs_pointers(dest)


def _refuse_lfs_pointers(dest: Path) -> None:
    for path in dest.rglob("*"):
        if path.is_file() and path.stat().st_size < 1024:
            with path.open("rb") as fh:
                if fh.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX:
                    raise InfraError(f"{path.relative_to(dest)} is a Git LFS pointer, not the file: "
                                     "install git-lfs (`git lfs install`) on this runner")


def download_huggingface(pin: Pin, dest: Path, progress: Progress, *, file: str) -> None:
    """snapshot_download at the exact commit (honours HF_HUB_OFFLINE / HF_HUB_CACHE), then copy into dest."""
    from huggingface_hub import snapshot_download

    progress(f"huggingface snapshot_download {pin.repo}@{pin.revision}")
    with _hub_errors(pin, file=file):
        snapshot = Path(snapshot_download(repo_id=pin.repo, revision=pin.revision,
                                          cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                          local_files_only=_offline(), token=os.environ.get("HF_TOKEN") or None))
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(snapshot.rglob("*")):
        if src.is_dir() or ".cache" in src.relative_to(snapshot).parts:
            continue
        target = dest / src.relative_to(snapshot)
        target.parent.mkdir(parents=True, exist_ok=True)
        real = src.resolve()
        try:
            os.link(real, target)  # same filesystem: no copy of the weights
        except OSError:
            shutil.copyfile(real, target)


def confirm_revision(location: str, pin: Pin, *, file: str) -> None:
    """Ask the source, cheaply, whether it still serves `pin.revision` (no weights are downloaded): a source that
    does not is bad input (PinError, exit 2) naming the repository and the revision."""
    if pin.source == "git":
        _confirm_git(location, pin, file=file)
    else:
        _confirm_huggingface(pin, file=file)


def _confirm_git(location: str, pin: Pin, *, file: str) -> None:
    local = _local_repo(location)
    if local:
        if _git("--git-dir", local, "cat-file", "-e", f"{pin.revision}^{{commit}}").returncode:
            raise PinError(f"commit {pin.revision} does not exist in {location!r}", file=file,
                           path="candidate.revision")
        return
    with tempfile.TemporaryDirectory(prefix="modelgate-confirm-") as tmp:  # trees only: no blob is fetched
        gitdir = str(Path(tmp) / "probe.git")
        if _git("init", "--quiet", "--bare", gitdir).returncode:
            raise InfraError(f"git init failed in {tmp}")
        got = _git("--git-dir", gitdir, "fetch", "--quiet", "--depth", "1", "--filter=blob:none", location,
                   pin.revision)
        if got.returncode == 0:
            return
        refs = _git("ls-remote", location)  # servers that refuse a fetch by sha: a ref must point at it
        if refs.returncode:
            raise PinError(f"cannot fetch from git repository {location!r}: {reason(refs.stderr)}",
                           file=file, path="candidate.repo")
        if not any(line.split("\t", 1)[0] == pin.revision for line in refs.stdout.splitlines()):
            raise PinError(f"commit {pin.revision} does not exist in {location!r} ({reason(got.stderr)})",
                           file=file, path="candidate.revision")


def _confirm_huggingface(pin: Pin, *, file: str) -> None:
    """Online: the revision resolves for that repo id with the locked file list. Offline (HF_HUB_OFFLINE): the
    local HF cache is the source, and it must hold that snapshot."""
    if _offline():
        from huggingface_hub import constants

        cache = Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)
        snapshot = cache / f"models--{pin.repo.replace('/', '--')}" / "snapshots" / pin.revision
        if not snapshot.is_dir():
            raise _not_in_local_cache(pin)
        served = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    else:
        from huggingface_hub import HfApi

        with _hub_errors(pin, file=file):
            api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None)
            info = api.model_info(pin.repo, revision=pin.revision)
        served = {s.rfilename for s in info.siblings or []}
    if served != set(pin.files):
        diff = sorted(served ^ set(pin.files))
        raise PinError(f"{pin.repo}@{pin.revision} serves a different file list than the lock "
                       f"({', '.join(diff[:5])}{', ...' if len(diff) > 5 else ''})", file=file, path="candidate.files")


def _offline() -> bool:
    """HF_HUB_OFFLINE read now (huggingface_hub reads it once, at import time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _not_in_local_cache(pin: Pin) -> InfraError:
    return InfraError(f"{pin.repo}@{pin.revision} is not in the local HF cache and the hub cannot be reached "
                      f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!s})")


@contextlib.contextmanager
def _hub_errors(pin: Pin, *, file: str) -> Iterator[None]:
    """The Hub's errors named once: a revision or repository it does not serve is the pin's fault (bad input,
    exit 2); an unreachable Hub, or an offline cache without the snapshot, is the environment's (exit 3)."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except RevisionNotFoundError as exc:
        raise PinError(f"revision {pin.revision} not found in {pin.repo!r}", file=file,
                       path="candidate.revision") from exc
    except RepositoryNotFoundError as exc:
        raise PinError(f"repository {pin.repo!r} not found (or no access)", file=file,
                       path="candidate.repo") from exc
    except LocalEntryNotFoundError as exc:
        raise _not_in_local_cache(pin) from exc
    except HfHubHTTPError as exc:
        raise InfraError(f"Hugging Face Hub error for {pin.repo}: {reason(str(exc))}") from exc


def download(location: str, pin: Pin, dest: Path, progress: Progress, *, file: str) -> None:
    if pin.source == "git":
        download_git(location, pin, dest, progress, file=file)
    else:
        download_huggingface(pin, dest, progress, file=file)

