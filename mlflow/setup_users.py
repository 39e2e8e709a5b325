"""Create modelgate's two users on an MLflow server run with `--app-name basic-auth`, and their permissions.

    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \\
    MODELGATE_PR_PASSWORD=... MODELGATE_RELEASE_PASSWORD=... \\
      .venv/bin/python mlflow/setup_users.py --tracking-uri https://mlflow.internal --config release.yaml

- `modelgate-pr` (the pull-request gate, advisory): EDIT on the advisory experiment (create runs there, log params,
  metrics and artifacts); READ on what an advisory gate pairs with and verifies: the registered model (the
  `production` alias and its version), the release experiment (production's gate run: version.json, items.json,
  report.json, its signature) and the audit experiment (the audit trail). It cannot register a model version, move
  an alias, tag a version, write a release or audit run, or grant permissions.
- `modelgate-release` (the release gate and promote/rollback): EDIT on the release experiment and its audit
  experiment, MANAGE on the registered model (versions, tags, aliases; deleting the `previous` alias needs
  MANAGE, MLflow's only level with delete).

Nobody else holds a permission on those objects (admins aside), and the two users hold exactly these. MLflow gives
whoever creates an experiment or a registered model MANAGE on it, so a name created before this script ran (say,
by the PR credential: squatting) would keep its creator's MANAGE. Before granting, the script reads every user's
grants (MLflow's user list, as an admin) and REPAIRS a per-user grant on a release object that the table above
does not give: revoked (then the planned level granted), each said on stdout as "repaired: ...", with what the
object holds already. It REFUSES (exit 2, before granting or revoking anything) what it does not own: a grant
through a shared role, or a wildcard (`*`) grant reaching those objects. After granting, it checks every user's
effective permission on each object as the server resolves it (roles, wildcards and the server's
`default_permission` included) and refuses (exit 2) if any differs from the table.

Run it as an admin (the credential in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). The experiments and
the registered model are created when missing so permissions can be attached to them. A user's password comes from
MODELGATE_PR_PASSWORD / MODELGATE_RELEASE_PASSWORD; with --generate-passwords a missing one is generated and
printed once on stdout (nothing else ever prints a password). An existing user keeps its password. Idempotent: a
second run changes nothing and says so. Exit 0 done, 2 bad input or refused (another user's grant it does not
own), 3 the server refused or is unreachable.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    """Every permission the two users hold, from release.yaml: the table in mlflow/README.md. The PR role reads
    what its advisory gate pairs with and verifies (production's alias, version, gate run and audit trail)."""
    return [
        Grant(PR_USER, "experiment", release.advisory_experiment, "EDIT"),
        Grant(PR_USER, "experiment", release.tracking_experiment, "READ"),
        Grant(PR_USER, "experiment", release.audit_experiment, "READ"),
        Grant(PR_USER, "registered_model", release.model_name, "READ"),
        Grant(RELEASE_USER, "experiment", release.tracking_experiment, "EDIT"),
        Grant(RELEASE_USER, "experiment", release.audit_experiment, "EDIT"),
        Grant(RELEASE_USER, "registered_model", release.model_name, "MANAGE"),
    ]


NONE = "NO_PERMISSIONS"  # what the server answers for a user without any permission on a resource
SYNTHETIC_ROLE = re.compile(r"__user_\d+__")  # MLflow's hidden per-user role: the grants grant/revoke write
# grant types whose wildcard (`*`) reaches the objects: the containers and their sub-resource tiers (MLflow 3.17)
REACHING = ("experiment", "registered_model", "workspace", "run", "trace", "assessment", "logged_model",
            "registered_model_version")
TIERS = ("run", "registered_model_version")  # checked for their effective `*` permission: NONE for every user


@dataclass(frozen=True)
class Obj:
    """One object the plan grants on: its kind, name and the id MLflow's grants name it by."""
    resource_type: str
    name: str
    resource_id: str

    def __str__(self) -> str:
        return f"{self.resource_type.replace('_', ' ')} {self.name!r}"


@dataclass(frozen=True)
class Held:
    """A grant some user holds, as the server lists it."""
    user: str
    role: str
    resource_type: str
    pattern: str
    permission: str

    @property
    def repairable(self) -> bool:
        """A per-user grant on one object (revoke touches that user only); a role or a wildcard is not ours."""
        return bool(SYNTHETIC_ROLE.fullmatch(self.role)) and self.pattern != "*"


class Refused(Exception):
    pass


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

    def obj(self, resource_type: str, name: str) -> Obj:
        """The object (created when missing) and the id grants name it by: experiment id, model name."""
        rid = self.experiment(name) if resource_type == "experiment" else self.registered_model(name)
        return Obj(resource_type, name, rid)

    def users(self) -> list[dict[str, Any]]:
        """Every user with its roles and their grants (the server's user list; an admin may read it)."""
        from mlflow.server.auth.routes import LIST_USERS
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        resp = http_request(get_default_host_creds(self.uri), LIST_USERS, "GET")
        users: list[dict[str, Any]] = verify_rest_response(resp, LIST_USERS).json()["users"]
        return users

    def held(self, objects: list[Obj]) -> list[Held]:
        """Every grant of a non-admin user that reaches one of `objects`: on it by id, or a wildcard of a kind
        that reaches it. DENY takes permissions away: not listed."""
        ids = {(o.resource_type, o.resource_id) for o in objects}
        found = []
        for user in self.users():
            if user.get("is_admin"):
                continue
            for role in user.get("roles", []):
                for rp in role.get("permissions", []):
                    kind, pattern, level = rp["resource_type"], rp["resource_pattern"], rp["permission"]
                    reaches = (kind, pattern) in ids or (pattern == "*" and kind in REACHING)
                    if reaches and level != "DENY":
                        found.append(Held(user["username"], role["name"], kind, pattern, level))
        return found

    def repair(self, grants: list[Grant], objects: list[Obj]) -> None:
        """Revoke every per-user grant on a release object that the plan does not give at that level (a squatter's
        MANAGE, a stray grant), saying so; refuse, changing nothing, a shared role's or a wildcard grant."""
        by_id = {(o.resource_type, o.resource_id): o for o in objects}
        planned = {(g.user, g.resource_type, by_id_of(objects, g).resource_id): g.permission for g in grants}
        stray = [h for h in self.held(objects) if planned.get((h.user, h.resource_type, h.pattern)) != h.permission]
        foreign = [h for h in stray if not h.repairable]
        if foreign:
            raise Refused("; ".join(foreign_grant(h, by_id) for h in foreign)
                          + ": remove it (setup_users repairs only per-user grants on the release objects)")
        for h in stray:
            obj = by_id[(h.resource_type, h.pattern)]
            self.auth.revoke_user_permission(h.user, h.resource_type, h.pattern)
            want = planned.get((h.user, h.resource_type, h.pattern))
            line = (f"repaired: revoked {h.user}'s {h.permission} on {obj}"
                    + (f" (it is to hold {want})" if want else " (nobody but the two users may hold one)")
                    + f"; {self.contents(obj)}")
            self.changes.append(line)
            print(line)

    def contents(self, obj: Obj) -> str:
        """What an object another user could write holds already (the release commands verify each of it)."""
        if obj.resource_type == "registered_model":
            model = self.client.get_registered_model(obj.name)
            versions = self.client.search_model_versions(f"name='{obj.name}'")
            aliases = ", ".join(f"{a}=v{v}" for a, v in sorted((model.aliases or {}).items())) or "none"
            return f"it holds {len(versions)} version(s), aliases: {aliases}"
        runs = self.client.search_runs([obj.resource_id], max_results=1000)
        return f"it holds {len(runs)} run(s)"

    def verify(self, grants: list[Grant], objects: list[Obj]) -> None:
        """Each non-admin user's effective permission on each object (and on every run and model version: the
        wildcard tiers) is the plan's, as the server resolves it: roles, wildcards, default_permission included."""
        planned = {(g.user, g.resource_type, g.name): g.permission for g in grants}
        wrong = []
        for user in (u["username"] for u in self.users() if not u.get("is_admin")):
            checks = [(o.resource_type, o.resource_id, str(o), planned.get((user, o.resource_type, o.name), NONE))
                      for o in objects] + [(tier, "*", f"every {tier.replace('_', ' ')}", NONE) for tier in TIERS]
            for kind, rid, what, want in checks:
                got = self.auth.get_user_permission(user, kind, rid).permission
                if got != want:
                    wrong.append(f"{user} holds {got} on {what} (the plan: {want})")
        if wrong:
            raise Refused("; ".join(wrong) + ": a role, a wildcard grant or the server's default_permission gives "
                          "it; remove that")

    def grant(self, g: Grant) -> None:
        from mlflow.exceptions import MlflowException

        resource_id = self.obj(g.resource_type, g.name).resource_id
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


def foreign_grant(h: Held, by_id: dict[tuple[str, str], Obj]) -> str:
    """'modelgate-pr holds EDIT on registered model 'm' through role 'editors'' (or '... every run (*) through a
    wildcard grant')."""
    what = by_id.get((h.resource_type, h.pattern)) or f"every {h.resource_type.replace('_', ' ')} (*)"
    how = "a wildcard grant" if SYNTHETIC_ROLE.fullmatch(h.role) else f"role {h.role!r}"
    return f"{h.user} holds {h.permission} on {what} through {how}"


def by_id_of(objects: list[Obj], g: Grant) -> Obj:
    """The object grant `g` is on."""
    return next(o for o in objects if (o.resource_type, o.name) == (g.resource_type, g.name))


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
        grants = plan(release)
        objects = list({(g.resource_type, g.name): setup.obj(g.resource_type, g.name) for g in grants}.values())
        setup.repair(grants, objects)
        for g in grants:
            setup.grant(g)
        setup.verify(grants, objects)
    except BadInput as exc:
        print(f"setup_users: {exc}", file=sys.stderr)
        return 2
    except Refused as exc:
        print(f"setup_users: refused: {exc}", file=sys.stderr)
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
