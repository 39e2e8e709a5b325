"""One way to run git in tests: a fixed identity, `main` as the first branch, no user or system config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

AUTHOR = "dev@example.com"
# also given to `modelgate` children that run git themselves (the bad-input corpus)
GIT_ENV = {"GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": AUTHOR, "GIT_COMMITTER_NAME": "dev",
           "GIT_COMMITTER_EMAIL": AUTHOR, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def git(repo: Path, *args: str) -> str:
    """`git -C repo <args>`; its stdout, stripped. Raises CalledProcessError on failure."""
    return subprocess.run(["git", "-C", str(repo), "-c", "init.defaultBranch=main", *args], check=True,
                          capture_output=True, text=True, env={**os.environ, **GIT_ENV}).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """`git init` (if needed), add everything, commit; the new commit's sha."""
    if not (repo / ".git").exists():
        git(repo, "init", "--quiet")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")
