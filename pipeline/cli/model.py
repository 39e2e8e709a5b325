"""`modelgate lock` and `fetch`: the pinned model's lock and files."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli.common import home, with_config
from pipeline.util.progress import progress_for


def cmd_lock(args: argparse.Namespace) -> int:
    from pipeline.model.lock import lock

    files = lock(args.config, home(args.config), revision=args.revision, progress=progress_for("lock"))
    print(f"locked {len(files)} file(s) in {args.config}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from pipeline.config.release import load_release
    from pipeline.model.fetch import fetch

    release = load_release(args.config)
    pin = release.candidate
    model_dir = fetch(pin, release.repo_location(pin), home(args.config), file=str(release.path),
                      allowlist=release.remote_code_allowlist, progress=progress_for("fetch"))
    print(model_dir.path)
    return 0


def register(sub: Any) -> None:
    """The parsers of `lock` and `fetch` (`sub`: the top-level subparsers)."""
    lock = with_config(sub.add_parser("lock", help="write the sha256 of every file of the pin into release.yaml"))
    lock.add_argument("--revision", help="pin this 40-hex commit (default: the one in release.yaml)")
    lock.set_defaults(func=cmd_lock)

    fetch = with_config(sub.add_parser("fetch", help="fetch and verify the pinned candidate; print its path"))
    fetch.set_defaults(func=cmd_fetch)
