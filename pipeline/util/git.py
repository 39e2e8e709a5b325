"""Every git call modelgate makes goes through `git()` here (pre-commit's git.py is the model): one
subprocess helper, text in and out, output captured, and one clear error.

A failed call raises `GitError` (an InfraError: the environment) only when the caller asks for `check`;
callers that turn a failure into something else (a pin that names no commit is bad input; a source tree
that is not a repository records "unknown") look at `returncode` and use `reason()` for git's words.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import InfraError

StrPath = str | Path


class GitError(InfraError):
    """git exited non-zero where the caller needed it to succeed."""

    def __init__(self, args: tuple[str, ...], cwd: StrPath | None, returncode: int, stderr: str):
        self.git_args = args
        self.cwd = cwd
        self.returncode = returncode
        self.stderr = stderr
        where = f" in {cwd}" if cwd is not None else ""
        super().__init__(f"git {subcommand(args)}{where} failed: {' '.join(stderr.split())[:300]}")


_OPTIONS_WITH_VALUE = frozenset({"-c", "-C", "--git-dir", "--work-tree"})


def subcommand(args: tuple[str, ...]) -> str:
    """The git subcommand in `args` (after global options such as `-c key=value` or `--git-dir X`)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return ""


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, **(env or {})}


def _not_installed(exc: OSError) -> InfraError:
    return InfraError(f"cannot run git ({exc.strerror or exc}): is git installed and on PATH?")


def git(*args: str, cwd: StrPath | None = None, check: bool = True, input: str | None = None,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `git -C cwd ARGS` with os.environ plus `env`; `input` on its stdin. With `check`, a non-zero exit
    raises GitError naming the subcommand, `cwd` and git's stderr. (`-C`, not a working directory of the
    process: a missing directory is git's error, like any other.)"""
    where = ("-C", str(cwd)) if cwd is not None else ()
    try:
        proc = subprocess.run(["git", *where, *args], input=input, env=_env(env), capture_output=True, text=True,
                              check=False)
    except FileNotFoundError as exc:
        raise _not_installed(exc) from exc
    if check and proc.returncode != 0:
        raise GitError(args, cwd, proc.returncode, proc.stderr)
    return proc


def git_stream(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `git ARGS` with its stdout and stderr as byte pipes (a `git archive` piped into tar)."""
    try:
        return subprocess.Popen(["git", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(env))
    except FileNotFoundError as exc:
        raise _not_installed(exc) from exc


def reason(stderr: str) -> str:
    """git's reason: its (last) `fatal:`/`error:` line, else its last line ("...and the repository exists."
    says nothing)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return (fatal or lines or ["(no output)"])[-1]


def is_valid_tag_name(name: str) -> bool:
    return git("check-ref-format", f"refs/tags/{name}", check=False).returncode == 0
