"""Least privilege on the team's tracking server, for real: MLflow with `--app-name basic-auth` on PostgreSQL
(tests/support/team_server.py), users and permissions made by mlflow/setup_users.py. The permission matrix is
asserted both ways for every action; credentials travel only in the environment and never show in outputs."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config.release import load_release
from tests.support.cli import child_env
from tests.support.paths import REPO
from tests.support.team import alias, approve, make_team, model_of, modelgate, promote, record_gate
from tests.support.team_server import Credential, setup_team, setup_users

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def as_user(cred: Credential | None):
    """MLflow clients in this block authenticate as `cred` (the environment, as CI passes it), or as nobody."""
    saved = dict(os.environ)
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(key, None)
    os.environ.update(cred.env() if cred else {})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def allowed(uri: str, cred: Credential, action) -> bool:
    """True if `action(client)` succeeds as `cred`; False only on MLflow's PERMISSION_DENIED (403), or the artifact
    proxy's 403 (an upload answers with an HTTP error, not an MLflow one)."""
    import requests

    with as_user(cred):
        try:
            action(MlflowClient(tracking_uri=uri))
            return True
        except MlflowException as exc:
            if exc.error_code == "PERMISSION_DENIED":
                return False
            raise
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 403:
                return False
            raise


@pytest.fixture(scope="module")
def world(team_server, team_users):
    """What the actions act on, made by the admin: a run and a model version in the release experiment."""
    release = load_release(team_users["config"])
    with as_user(team_server.admin):
        client = MlflowClient(tracking_uri=team_server.uri)
        exp = client.get_experiment_by_name(release.tracking_experiment).experiment_id
        run = client.create_run(exp).info.run_id
        version = client.create_model_version(release.model_name, source=f"runs:/{run}/model", run_id=run).version
        client.set_registered_model_alias(release.model_name, "stays", version)
    advisory = client_experiment(team_server, f"{release.tracking_experiment}/advisory")
    return {"release": release, "experiment": exp, "run": run, "version": version, "advisory": advisory}


def client_experiment(server, name: str) -> str:
    with as_user(server.admin):
        return MlflowClient(tracking_uri=server.uri).get_experiment_by_name(name).experiment_id


def actions(server, w):
    """Each action of the matrix: name -> callable(client)."""
    model = w["release"].model_name

    def advisory_run(c):
        run = c.create_run(w["advisory"]).info.run_id
        c.log_param(run, "suite", "format")
        c.log_metric(run, "pass_rate", 0.9)
        c.log_text(run, "advisory", "report.md")
        c.set_terminated(run)

    def release_run(c):
        c.set_terminated(c.create_run(w["experiment"]).info.run_id)

    def read_alias(c):
        c.get_model_version_by_alias(model, "stays")
        c.search_model_versions(f"name='{model}'")

    def read_release_run(c):
        c.get_run(w["run"])
        c.list_artifacts(w["run"])

    def new_version(c):
        c.create_model_version(model, source=f"runs:/{w['run']}/model", run_id=w["run"])

    def set_alias(c):
        c.set_registered_model_alias(model, "production", w["version"])

    def delete_alias(c):
        c.delete_registered_model_alias(model, "stays")
        c.set_registered_model_alias(model, "stays", w["version"])  # back for the next caller

    def version_tag(c):
        c.set_model_version_tag(model, w["version"], "modelgate.verdict", "passed")

    def update_model(c):
        c.update_registered_model(model, description="edited")

    def grant_experiment(c):
        from mlflow.server.auth.client import AuthServiceClient

        user = os.environ["MLFLOW_TRACKING_USERNAME"]
        AuthServiceClient(server.uri).grant_user_permission(user, "experiment", w["experiment"], "MANAGE")

    return {
        "create a run, log params/metrics/artifacts in the advisory experiment": advisory_run,
        "read an alias and the versions of the registered model": read_alias,
        "read a run of the release experiment and its artifacts": read_release_run,
        "create a run in the release experiment": release_run,
        "create a version of the registered model": new_version,
        "set an alias": set_alias,
        "delete an alias": delete_alias,
        "set a model version tag": version_tag,
        "update the registered model": update_model,
        "grant itself MANAGE on the release experiment": grant_experiment,
    }


# The permissions mlflow/setup_users.py gives (mlflow/README.md): action -> (modelgate-pr, modelgate-release).
EXPECTED = {
    "create a run, log params/metrics/artifacts in the advisory experiment": (True, False),
    "read an alias and the versions of the registered model": (True, True),
    "read a run of the release experiment and its artifacts": (True, True),
    "create a run in the release experiment": (False, True),
    "create a version of the registered model": (False, True),
    "set an alias": (False, True),
    "delete an alias": (False, True),
    "set a model version tag": (False, True),
    "update the registered model": (False, True),
    "grant itself MANAGE on the release experiment": (False, False),
}


def test_permission_matrix_of_the_pr_and_release_credentials(team_server, team_users, world):
    found = {}
    for name, action in actions(team_server, world).items():
        found[name] = (allowed(team_server.uri, team_users["pr"], action),
                       allowed(team_server.uri, team_users["release"], action))
    rows = [f"| {name} | {'yes' if pr else 'no'} | {'yes' if rel else 'no'} |" for name, (pr, rel) in found.items()]
    print("\n| action | modelgate-pr | modelgate-release |\n|---|---|---|\n" + "\n".join(rows))
    assert found == EXPECTED
    # what the PR credential was refused did not happen
    with as_user(team_server.admin):
        client = MlflowClient(tracking_uri=team_server.uri)
        tags = client.get_model_version(world["release"].model_name, world["version"]).tags
        assert tags.get("modelgate.verdict") == "passed"  # set by the release credential, once


def test_wrong_or_missing_password_is_401(team_server, team_users):
    import httpx

    url = f"{team_server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
    for cred in (team_users["pr"], team_users["release"], team_server.admin):
        assert httpx.get(url, auth=(cred.username, cred.password + "x"), timeout=120).status_code == 401
        assert httpx.get(url, auth=(cred.username, cred.password), timeout=120).status_code == 200
    assert httpx.get(url, timeout=120).status_code == 401


def test_setup_users_is_idempotent_and_never_prints_a_password(team_server, team_users):
    first = team_users["output"]
    assert "user modelgate-pr: created" in first and "user modelgate-release: created" in first, first
    again = setup_users(team_server, team_users["config"])
    assert again["returncode"] == 0 and "nothing to change: already set up" in again["output"], again["output"]
    assert "exists (password unchanged)" in again["output"]
    for out, creds in ((first, team_users), (again["output"], again)):
        for cred in (creds["pr"], creds["release"], team_server.admin):
            assert cred.password not in out
    # the old passwords still hold: the second run did not reset them
    assert allowed(team_server.uri, team_users["pr"], lambda c: c.search_experiments(max_results=1))


def test_setup_users_refuses_credentials_in_the_uri(team_server, team_users):
    admin = team_server.admin
    uri = team_server.uri.replace("http://", f"http://{admin.username}:{admin.password}@")
    proc = subprocess.run([sys.executable, str(REPO / "mlflow" / "setup_users.py"), "--tracking-uri", uri,
                           "--config", str(team_users["config"])], capture_output=True, text=True,
                          env=child_env(admin.env()), timeout=300)
    assert proc.returncode == 2 and "must not carry credentials" in proc.stderr
    assert admin.password not in proc.stderr + proc.stdout


def test_release_credential_promotes_and_rolls_back_with_no_password_in_any_output(tmp_path, team_server,
                                                                                    team_users, monkeypatch):
    """The audit trail on PostgreSQL with the release credential (env only): gate, approve, promote twice,
    roll back, history; no output, report file or server log holds a password."""
    for key, value in team_users["release"].env().items():
        monkeypatch.setenv(key, value)
    uri = team_server.uri
    team = make_team(tmp_path / "team", f"pg-audit-{uuid.uuid4().hex[:6]}")
    outputs = [setup_team(team_server, team)]
    model = model_of(team)
    versions = []
    for n in (1, 2):
        v = record_gate(team, uri, n)
        for proc in (approve(team, uri, v), promote(team, uri, v)):
            assert proc.returncode == 0, proc.stderr
            outputs.append(proc.stdout + proc.stderr)
        versions.append(v)
    proc = modelgate(team, uri, "rollback", "--actor", "bob@example.com", "--reason", "latency")
    assert proc.returncode == 0, proc.stderr
    outputs.append(proc.stdout + proc.stderr)
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (versions[0], None)
    proc = modelgate(team, uri, "history", "--json")
    outputs.append(proc.stdout + proc.stderr)
    events = [(e["event"], e.get("version")) for e in json.loads(proc.stdout)["events"]]
    assert [e for e in events if e[0] != "gate"] == [
        ("approve", versions[0]), ("promote", versions[0]), ("approve", versions[1]), ("promote", versions[1]),
        ("rollback", versions[0])], events
    secrets_ = [c.password for c in (team_users["release"], team_users["pr"], team_server.admin)]
    files = [p for p in team.parent.rglob("*") if p.is_file() and ".git" not in p.parts]
    texts = outputs + [p.read_text(errors="replace") for p in files] + [team_server.mlflow.log.read_text()]
    assert files and not [t for t in texts for s in secrets_ if s in t]


# -- the PR role reads what its advisory gate pairs with, and writes only the advisory experiment -------------------


def baseline_reading_stage(seen: dict):
    """A stand-in format stage that reads production's baseline as the compare stage does (alias, version.json,
    items.json, report.json through the gate's BaselineStore) and keeps what it read in `seen`."""
    from pipeline.core.result import StageResult, Status

    def run(ctx):
        baseline = ctx.baseline_store.production(ctx.release.model_name)
        seen["baseline"] = baseline
        return StageResult("format", Status.PASSED, metrics={"pass_rate": 0.9},
                           reasons=[f"paired with production v{baseline.version}"])
    return run


def advisory_gate(config, uri: str, n: int, seen: dict, run_dir, monkeypatch):
    """Pin revision n and run `modelgate gate --kind advisory` (the CLI, in this process, with the environment's
    credential) with a stand-in stage that reads the baseline: the finished process."""
    import functools

    from pipeline.gate import run as gate
    from tests.support.team import set_candidate

    set_candidate(config, n)
    monkeypatch.setattr(gate, "run_gate", functools.partial(gate.run_gate,
                                                            stages=(("format", baseline_reading_stage(seen)),)))
    return modelgate(config, uri, "gate", "--kind", "advisory", "--author", "carol", "--run-dir", str(run_dir))


def test_advisory_gate_as_the_pr_user_reads_production_and_records_only_in_the_advisory_experiment(
        tmp_path, team_server, team_users, monkeypatch):
    """As the attack trial found, `gate --kind advisory` as modelgate-pr exited 3 (403 reading the `production`
    alias). Now: a signed release gate promoted by the release user; then the PR user's advisory gate reads
    production (alias, version record, per-item results), its signature and the audit trail, records its run in
    the advisory experiment (exit 0), and is still refused every write to a release object."""
    from pipeline.integrations.registry import BaselineStore, Registry
    from pipeline.releasing import signing
    from pipeline.report.document import GateReport
    from tests.support.team import pin_digests

    uri, pr = team_server.uri, team_users["pr"]
    team = make_team(tmp_path / "team", f"pr-reads-{uuid.uuid4().hex[:6]}")
    setup_team(team_server, team)
    release = load_release(team)
    with as_user(team_users["release"]):
        production = record_gate(team, uri, 1, cases=4)  # per-item results a later gate pairs with
        for proc in (approve(team, uri, production), promote(team, uri, production)):
            assert proc.returncode == 0, proc.stderr
    seen: dict = {}
    with as_user(pr):
        proc = advisory_gate(team, uri, 2, seen, tmp_path / "advisory-run", monkeypatch)
        assert proc.returncode == 0, proc.stderr  # the attack trial's exit 3: 403 reading `production`
        report = GateReport.load(tmp_path / "advisory-run" / "report.json")
        assert (report.exit_code, report.tracking.error, report.gate_kind) == (0, None, "advisory")
        assert report.baseline_version == production and seen["baseline"].version == production
        assert seen["baseline"].pin.files == pin_digests(1)
        assert len(seen["baseline"].items["format/pass"]) == 4, seen["baseline"]
        store = Registry(uri)
        gate_run = store.by_alias(release.model_name, "production").run_id
        for name in (signing.STATEMENT_FILE, signing.SIGNATURE_FILE):  # what a gate verifies production with
            assert store.artifact(gate_run, f"{signing.SIGNATURE_DIR}/{name}"), name
        assert BaselineStore(uri).production(release.model_name).run_id == gate_run
        history = modelgate(team, uri, "history", "--json")  # the audit trail, read as the PR user
        assert history.returncode == 0, history.stderr
        assert ("promote", production) in [(e["event"], e.get("version")) for e in json.loads(history.stdout)["events"]]
    with as_user(team_server.admin):
        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(report.tracking.run_id)
        assert client.get_experiment(run.info.experiment_id).name == release.advisory_experiment
        assert run.data.tags["modelgate.gate_kind"] == "advisory"
        assert not client.search_model_versions(f"name='{release.model_name}' and run_id='{run.info.run_id}'")
        release_exp = client.get_experiment_by_name(release.tracking_experiment).experiment_id
        audit_exp = client.get_experiment_by_name(release.audit_experiment).experiment_id

    def release_write(action):
        return allowed(uri, pr, action)

    assert not release_write(lambda c: c.set_registered_model_alias(release.model_name, "production", production))
    assert not release_write(lambda c: c.create_model_version(release.model_name, source="git://x@1",
                                                              run_id=gate_run))
    assert not release_write(lambda c: c.create_run(release_exp))
    assert not release_write(lambda c: c.create_run(audit_exp))
    assert not release_write(lambda c: c.set_model_version_tag(release.model_name, production, "x", "y"))
    assert not release_write(lambda c: c.log_text(gate_run, "forged", "items.json"))
    with as_user(team_server.admin):
        assert alias(uri, release.model_name, "production") == production


# -- squatting: a release name created by the PR credential before setup_users.py ran ------------------------------


def test_setup_users_repairs_a_squatted_model_and_experiments_and_the_pr_user_cannot_set_production(
        tmp_path, team_server, team_users):
    """The PR credential creates the registered model and both release experiments first (MLflow makes it their
    MANAGE holder) and sets `production` on a version of its own. setup_users.py revokes those grants, says so with
    what each object holds, leaves the PR user READ; afterwards the PR user cannot set `production`."""
    from mlflow.server.auth.client import AuthServiceClient

    uri, pr = team_server.uri, team_users["pr"]
    team = make_team(tmp_path / "team", f"squat-{uuid.uuid4().hex[:6]}")
    release = load_release(team)
    model = release.model_name
    with as_user(pr):
        client = MlflowClient(tracking_uri=uri)
        client.create_registered_model(model)
        exp = client.create_experiment(release.tracking_experiment)
        client.create_experiment(release.audit_experiment)
        run = client.create_run(exp).info.run_id
        squatted = client.create_model_version(model, source="git://evil/model@0", run_id=run).version
        client.set_registered_model_alias(model, "production", squatted)
    out = setup_team(team_server, team)
    assert f"repaired: revoked modelgate-pr's MANAGE on registered model '{model}' (it is to hold READ)" in out, out
    assert f"aliases: production=v{squatted}" in out, out
    for name in (release.tracking_experiment, release.audit_experiment):
        assert f"repaired: revoked modelgate-pr's MANAGE on experiment '{name}' (it is to hold READ)" in out, out
    with as_user(team_server.admin):
        auth = AuthServiceClient(uri)
        assert auth.get_user_permission("modelgate-pr", "registered_model", model).permission == "READ"
        assert auth.get_user_permission("modelgate-pr", "experiment", exp).permission == "READ"
        assert auth.get_user_permission("modelgate-release", "registered_model", model).permission == "MANAGE"
    assert not allowed(uri, pr, lambda c: c.set_registered_model_alias(model, "production", squatted))
    assert not allowed(uri, pr, lambda c: c.delete_registered_model_alias(model, "production"))
    assert not allowed(uri, pr, lambda c: c.create_model_version(model, source="git://evil/model@1", run_id=run))
    assert not allowed(uri, pr, lambda c: c.create_run(exp))
    assert allowed(uri, team_users["release"], lambda c: c.set_registered_model_alias(model, "candidate", squatted))
    again = setup_team(team_server, team)
    assert "repaired" not in again and "nothing to change: already set up" in again, again


@contextlib.contextmanager
def foreign_grant(server, kind: str, model: str):
    """A grant setup_users.py does not own, made by the admin and removed afterwards: `role` (a shared role giving
    modelgate-pr EDIT on the registered model) or `wildcard` (modelgate-pr's own EDIT on every run, `*`). Yields
    the refusal's expected words."""
    from mlflow.server.auth.client import AuthServiceClient

    with as_user(server.admin):
        auth = AuthServiceClient(server.uri)
        if kind == "role":
            role = auth.create_role("default", f"editors-{uuid.uuid4().hex[:6]}")
            auth.add_role_permission(role.id, "registered_model", model, "EDIT")
            auth.assign_role("modelgate-pr", role.id)
        else:
            auth.grant_user_permission("modelgate-pr", "run", "*", "EDIT")
    try:
        yield (f"modelgate-pr holds EDIT on registered model '{model}' through role '{role.name}'" if kind == "role"
               else "modelgate-pr holds EDIT on every run (*) through a wildcard grant")
    finally:
        with as_user(server.admin):
            if kind == "role":
                auth.unassign_role("modelgate-pr", role.id)
                auth.delete_role(role.id)
            else:
                auth.revoke_user_permission("modelgate-pr", "run", "*")


@pytest.mark.parametrize("kind", ["role", "wildcard"])
def test_setup_users_refuses_a_grant_it_does_not_own_and_grants_nothing(tmp_path, team_server, team_users, kind):
    """A grant reaching a release object that setup_users.py does not own (a shared role's, or a wildcard that
    lets the PR user edit every run, the release runs included) is refused: exit 2, one line naming the user, the
    object and where the grant comes from; nothing is granted or revoked."""
    from mlflow.server.auth.client import AuthServiceClient

    team = make_team(tmp_path / "team", f"foreign-{uuid.uuid4().hex[:6]}")
    model = load_release(team).model_name
    with as_user(team_server.admin):
        MlflowClient(tracking_uri=team_server.uri).create_registered_model(model)
    with foreign_grant(team_server, kind, model) as expected:
        proc = setup_users(team_server, team, check=False)
        assert proc["returncode"] == 2, proc["output"]
        refusal = [line for line in proc["output"].splitlines() if "refused" in line]
        assert refusal == [f"setup_users: refused: {expected}: remove it (setup_users repairs only per-user grants "
                           "on the release objects)"], proc["output"]
        assert "granted" not in proc["output"] and "repaired" not in proc["output"], proc["output"]
        with as_user(team_server.admin):
            permission = AuthServiceClient(team_server.uri).get_user_permission("modelgate-release",
                                                                               "registered_model", model)
        assert permission.permission == "NO_PERMISSIONS"  # nothing granted
