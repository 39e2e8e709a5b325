"""Create modelgate's two users on an MLflow server run with `--app-name basic-auth`, and their permissions.

    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \\
    MODELGATE_PR_PASSWORD=... MODELGATE_RELEASE_PASSWORD=... \\
      .venv/bin/python mlflow/setup_users.py --tracking-uri https://mlflow.internal --config release.yaml

- `modelgate-pr` (the pull-request gate): EDIT on the advisory experiment only (create runs there, log params,
  metrics and artifacts); READ on nothing else. It cannot register a model version, move an alias, tag a version
  or grant permissions.
- `modelgate-release` (the release gate and promote/rollback): EDIT on the release experiment and its audit
  experiment, MANAGE on the registered model (versions, tags, aliases; deleting the `previous` alias needs
  MANAGE, MLflow's only level with delete).

Run it as an admin (the credential in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). The experiments and
the registered model are created when missing so permissions can be attached to them. A user's password comes from
MODELGATE_PR_PASSWORD / MODELGATE_RELEASE_PASSWORD; with --generate-passwords a missing one is generated and
printed once on stdout (nothing else ever prints a password). An existing user keeps its password. Idempotent: a
second run changes nothing and says so. Exit 0 done, 2 bad input, 3 the server refused or is unreachable.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config.release import Release

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

PR_USER = "modelgate-pr"
RELEASE_USER = "modelgate-release"
PASSWORD_ENV = {PR_USER: "MODELGATE_PR_PASSWORD", RELEASE_USER: "MODELGATE_RELEASE_PASSWORD"}


@dataclass(frozen=True)
class Grant:
    user: str
    resource_type: str  # "experiment" | "registered_model"
    name: str  # experiment name or registered model name
    permission: str  # READ | EDIT | MANAGE | ...


def plan(release: Release) -> list[Grant]:
    """Every permission the two users hold, from release.yaml: the table in mlflow/README.md."""
    return [
        Grant(PR_USER, "experiment", release.advisory_experiment, "EDIT"),
        Grant(RELEASE_USER, "experiment", release.tracking_experiment, "EDIT"),
        Grant(RELEASE_USER, "experiment", release.audit_experiment, "EDIT"),
        Grant(RELEASE_USER, "registered_model", release.model_name, "MANAGE"),
    ]


class Setup:
    def __init__(self, uri: str, generate: bool):
        from mlflow.server.auth.client import AuthServiceClient
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.generate = generate
        self.auth = AuthServiceClient(uri)
        self.client = MlflowClient(tracking_uri=uri)
        self.changes: list[str] = []

    def user(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.auth.get_user(name)
            print(f"user {name}: exists (password unchanged)")
            return
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        password = os.environ.get(PASSWORD_ENV[name], "")
        generated = not password
        if generated:
            if not self.generate:
                raise BadInput(f"user {name} does not exist and {PASSWORD_ENV[name]} is not set "
                               "(set it, or pass --generate-passwords to have one generated and printed once)")
            password = secrets.token_urlsafe(24)
        self.auth.create_user(name, password)
        self.changes.append(f"created user {name}")
        print(f"user {name}: created" + (f"; generated password (shown once): {password}" if generated else ""))

    def experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        self.changes.append(f"created experiment {name!r}")
        print(f"experiment {name!r}: created")
        return self.client.create_experiment(name)

    def registered_model(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.client.create_registered_model(name, description="gated by modelgate")
            self.changes.append(f"created registered model {name!r}")
            print(f"registered model {name!r}: created")
        return name

    def grant(self, g: Grant) -> None:
        from mlflow.exceptions import MlflowException

        resource_id = self.experiment(g.name) if g.resource_type == "experiment" else self.registered_model(g.name)
        current = self.auth.get_user_permission(g.user, g.resource_type, resource_id).permission
        what = f"{g.user}: {g.permission} on {g.resource_type} {g.name!r}"
        if current == g.permission:
            print(f"{what} (already)")
            return
        try:
            self.auth.grant_user_permission(g.user, g.resource_type, resource_id, g.permission)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            self.auth.revoke_user_permission(g.user, g.resource_type, resource_id)  # another level: replace it
            self.auth.grant_user_permission(g.user, g.resource_type, resource_id, g.permission)
        self.changes.append(f"granted {what} (was {current})")
        print(f"{what} (granted; was {current})")


class BadInput(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow/setup_users.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="the MLflow server (no credentials in it)")
    parser.add_argument("--config", required=True, type=Path, help="the team's release.yaml")
    parser.add_argument("--generate-passwords", action="store_true",
                        help="generate a missing user's password and print it once on stdout")
    args = parser.parse_args(argv)

    from mlflow.exceptions import MlflowException

    from pipeline.config.release import load_release
    from pipeline.errors import BadInput as ConfigError
    from pipeline.integrations.tracking import display_uri

    uri = args.tracking_uri
    if "@" in uri.split("://", 1)[-1].split("/", 1)[0]:
        print("setup_users: --tracking-uri must not carry credentials; the admin's go in "
              "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD", file=sys.stderr)
        return 2
    if not (os.environ.get("MLFLOW_TRACKING_USERNAME") and os.environ.get("MLFLOW_TRACKING_PASSWORD")):
        print("setup_users: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an admin of the server",
              file=sys.stderr)
        return 2
    try:
        release = load_release(args.config)
    except ConfigError as exc:
        print(f"setup_users: {exc}", file=sys.stderr)
        return 2
    setup = Setup(uri, args.generate_passwords)
    try:
        for user in (PR_USER, RELEASE_USER):
            setup.user(user)
        for g in plan(release):
            setup.grant(g)
    except BadInput as exc:
        print(f"setup_users: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:
        print(f"setup_users: MLflow at {display_uri(uri)} refused: {exc.error_code}: {exc.message}"[:2000],
              file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"setup_users: MLflow at {display_uri(uri)} unreachable: {exc}", file=sys.stderr)
        return 3
    print(f"{len(setup.changes)} change(s)" if setup.changes else "nothing to change: already set up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
