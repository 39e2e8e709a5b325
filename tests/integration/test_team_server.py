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
    """True if `action(client)` succeeds as `cred`; False only on MLflow's PERMISSION_DENIED (403)."""
    with as_user(cred):
        try:
            action(MlflowClient(tracking_uri=uri))
            return True
        except MlflowException as exc:
            if exc.error_code == "PERMISSION_DENIED":
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
