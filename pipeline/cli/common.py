"""What every command group shares: the parser class (one-line errors, exit 2), `--config`, `--tracking-uri`, and
the release.yaml and tracking store a release command works on."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pipeline.errors import EXIT_BAD_INPUT
from pipeline.util.secrets import register_secret_env

if TYPE_CHECKING:
    from pipeline.config.release import Release

# the precedence of integrations.tracking.resolve_uri
TRACKING_URI_HELP = ("MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then release.yaml tracking.uri, "
                     "then mlflow/mlflow.db)")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"modelgate: error: {message} (see `{self.prog} --help`)\n")


def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", type=Path, default=Path("release.yaml"), help="release.yaml (default: ./release.yaml)")
    return p


def home(config: Path) -> Path:
    env = os.environ.get("MODELGATE_HOME")
    return Path(env).resolve() if env else config.resolve().parent / ".modelgate"


def store(args: argparse.Namespace) -> tuple[Release, str]:
    """release.yaml and the tracking store a release command works on (checked before anything changes)."""
    from pipeline.config.release import load_release
    from pipeline.integrations import tracking

    release = load_release(args.config)
    register_secret_env(release.secret_env)
    uri = tracking.resolve_uri(args.tracking_uri, configured=release.tracking_uri, root=release.root)
    tracking.preflight(uri)
    return release, uri


def actor(args: argparse.Namespace) -> str | None:
    return args.actor or os.environ.get("MODELGATE_ACTOR")
