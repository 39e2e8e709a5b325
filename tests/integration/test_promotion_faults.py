"""A promotion interrupted between its steps, and release operations racing each other: a re-run completes
the interrupted one, state stays consistent, exactly one of two racing operations wins."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from pipeline.releasing.promotion import STEPS
from tests.support import cli
from tests.support.barrier import start_together
from tests.support.ghfake.fixtures import FAKE_REPO
from tests.support.git import git
from tests.support.signing import audit_env
from tests.support.team import (
    alias,
    approve,
    make_team,
    model_of,
    modelgate,
    promote,
    record_gate,
    released,
    revision_of,
)

pytestmark = pytest.mark.integration

# Runs `modelgate promote` in a child that SIGKILLs itself right before the given step: nothing of the step
# or after it happens, as when the machine dies there.
KILL_BEFORE = """
import os, signal, sys
from pipeline.releasing import promotion
from pipeline import cli
step = sys.argv[1]
original = getattr(promotion.Operation, "step_" + step)
def die(self):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(promotion.Operation, "step_" + step, die)
sys.exit(cli.main(sys.argv[2:]))
"""


def killed_promote(team, uri, version, step, actor="alice"):
    return subprocess.run([sys.executable, "-c", KILL_BEFORE, step, "promote", "--version", version,
                           "--actor", actor, "--config", str(team)], capture_output=True, text=True,
                          env=cli.child_env({"MLFLOW_TRACKING_URI": uri, **audit_env()}), timeout=120)


def promote_events(uri, team):
    doc = json.loads(modelgate(team, uri, "history", "--json").stdout)
    return [e for e in doc["events"] if e["event"] == "promote"], doc


@pytest.mark.parametrize("step", ["tag", "github"] + ["aliases"])
def test_promotion_killed_before_a_step_is_completed_by_a_rerun(team, mlflow_server, step):
    uri, model = mlflow_server, model_of(team)
    v1 = released(team, uri, 1)
    v2 = record_gate(team, uri, 2)
    approve(team, uri, v2)
    proc = killed_promote(team, uri, v2, step)
    assert proc.returncode == -9, proc.stderr
    done = STEPS[:STEPS.index(step)]
    events, doc = promote_events(uri, team)
    assert events[-1]["state"] == "in-progress" and events[-1]["steps"] == list(done)
    assert any(f"promote of {model} v{v2}" in hint for hint in doc["in_progress"])
    moved = "aliases" in done
    assert alias(uri, model, "production") == (v2 if moved else v1)
    # the half-done state is not silent: resolve warns, history says so, nothing else may start
    res = modelgate(team, uri, "resolve", "production")
    assert res.returncode == 0 and "incomplete release operation" in res.stderr
    other = modelgate(team, uri, "rollback", "--actor", "bob@example.com", "--reason", "x")
    assert other.returncode == 6 and f"modelgate promote --version {v2}" in other.stderr
    # the re-run (by another manager) completes it, without repeating a step
    proc = promote(team, uri, v2, "bob@example.com")
    assert proc.returncode == 0, proc.stderr
    assert "resuming the interrupted promotion" in proc.stderr
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v2, v1)
    events, doc = promote_events(uri, team)
    assert len(events) == 2 and events[-1]["state"] == "completed" and events[-1]["steps"] == list(STEPS)
    assert events[-1]["resumed_by"] == "bob@example.com" and doc["in_progress"] == []
    assert git(team.parent, "tag", "--list").split() == sorted([f"{model}/v{v1}", f"{model}/v{v2}"])
    again = promote(team, uri, v2)
    assert again.returncode == 0 and "already production" in again.stdout


def assert_ran_one_after_the_other(uri, team, model):
    """Two operations started together that both exited 0 did not race: the trail holds both as completed, the
    second started after the first completed, nothing is in progress, and the alias is the last one's version."""
    _, doc = promote_events(uri, team)
    assert doc["in_progress"] == []
    ops = [e for e in doc["events"] if e["event"] in ("promote", "rollback")]
    last_two = [e for e in ops if e["state"] == "completed"][-2:]
    assert len(last_two) == 2 and not any(e["state"] == "lost" for e in ops), ops
    assert last_two[0]["at"] <= last_two[1]["at"], last_two
    assert alias(uri, model, "production") == last_two[1]["version"], last_two


def test_two_promotions_at_once_exactly_one_wins(release_tracking, team):
    uri, model = release_tracking, model_of(team)
    v1 = record_gate(team, uri, 1)
    v2 = record_gate(team, uri, 2)
    for v in (v1, v2):
        approve(team, uri, v)
    env = {"MLFLOW_TRACKING_URI": uri, "MODELGATE_ACTOR": None, **audit_env()}
    procs = start_together(team.parent / "barrier", [["promote", "--version", v, "--actor", "alice", "--config",
                                                      str(team)] for v in (v1, v2)], env=env)
    results = [p.finish(timeout_s=120) for p in procs]
    codes = sorted(code for code, _, _ in results)
    if codes == [0, 0]:  # no race after all: one ran after the other had finished (a slow start under load)
        assert_ran_one_after_the_other(uri, team, model)
        return
    assert codes == [0, 6], results
    winner = (v1, v2)[[code for code, _, _ in results].index(0)]
    loser_err = next(err for code, _, err in results if code == 6)
    assert "won the claim" in loser_err or "in progress" in loser_err
    assert alias(uri, model, "production") == winner
    events, _ = promote_events(uri, team)
    assert [e["version"] for e in events if e["state"] == "completed"] == [winner]
    # the loser either saw the winner's claim first, or claimed too and recorded that it lost
    assert all(e["state"] == "lost" and e["version"] != winner for e in events if e["state"] != "completed")
    assert git(team.parent, "tag", "--list") == f"{model}/v{winner}"


def test_promotion_racing_a_rollback_exactly_one_wins(release_tracking, team):
    uri, model = release_tracking, model_of(team)
    v1 = released(team, uri, 1)
    released(team, uri, 2)
    v3 = record_gate(team, uri, 3)
    approve(team, uri, v3)
    env = {"MLFLOW_TRACKING_URI": uri, "MODELGATE_ACTOR": None, **audit_env()}
    procs = start_together(team.parent / "barrier", [[*args, "--config", str(team)]
                                                     for args in (["promote", "--version", v3, "--actor", "alice"],
                                                                  ["rollback", "--actor", "bob@example.com",
                                                                   "--reason", "latency"])], env=env)
    results = [p.finish(timeout_s=120) for p in procs]
    codes = [code for code, _, _ in results]
    if codes == [0, 0]:  # no race after all: one ran after the other had finished (a slow start under load)
        assert_ran_one_after_the_other(uri, team, model)
        return
    assert sorted(codes) == [0, 6], results
    expected = v3 if codes[0] == 0 else v1
    assert alias(uri, model, "production") == expected
    _, doc = promote_events(uri, team)
    assert doc["in_progress"] == []
    states = [e["state"] for e in doc["events"] if e["event"] in ("promote", "rollback")]
    assert states.count("completed") == 3 and states.count("lost") <= 1


def test_github_failure_leaves_a_resumable_promotion_and_one_deployment(tmp_path, mlflow_server, github_fake):
    uri = mlflow_server
    team = make_team(tmp_path / "team", "it-github-deploy", github={"repository": FAKE_REPO,
                                                                     "api_url": github_fake.url,
                                                                     "environment": "production"})
    model = model_of(team)
    v1 = record_gate(team, uri, 1)
    approve(team, uri, v1)
    env = {"GITHUB_TOKEN": github_fake.token, "MODELGATE_GITHUB_RETRY": "2,0.05,0.2", **SECRETS}
    no_token = promote(team, uri, v1)
    assert no_token.returncode == 2 and "GITHUB_TOKEN is not set" in no_token.stderr
    github_fake.fail_next(100, "error", status=500, path="/deployments")
    proc = modelgate(team, uri, "promote", "--version", v1, "--actor", "alice", **env)
    assert proc.returncode == 3, proc.stderr
    assert "GitHub" in proc.stderr and "500" in proc.stderr and github_fake.token not in proc.stderr
    assert alias(uri, model, "production") == v1  # aliases and tag done before GitHub; the operation is open
    events, doc = promote_events(uri, team)
    assert events[-1]["state"] == "in-progress" and events[-1]["steps"] == ["aliases", "tag"]
    github_fake.faults.clear()
    proc = modelgate(team, uri, "promote", "--version", v1, "--actor", "bob@example.com", **env)
    assert proc.returncode == 0, proc.stderr
    deployments = github_fake.state.deployments_in(FAKE_REPO)
    assert len(deployments) == 1 and deployments[0]["environment"] == "production"
    assert deployments[0]["payload"]["version"] == v1 and deployments[0]["payload"]["revision"] == revision_of(team)
    statuses = github_fake.state.deployment_statuses[deployments[0]["id"]]
    assert [s["state"] for s in statuses] == ["success"]
    events, doc = promote_events(uri, team)
    assert events[-1]["state"] == "completed" and doc["in_progress"] == []
    assert events[-1]["deployment_url"].endswith(f"/deployments/{deployments[0]['id']}")
    # nothing the promotion wrote carries a secret: output, audit runs, the git tag, what GitHub received
    secrets = [github_fake.token, SECRETS["HF_TOKEN"], SECRETS["MLFLOW_TRACKING_PASSWORD"]]
    client = MlflowClient(tracking_uri=uri)
    audit = client.search_runs([client.get_experiment_by_name(f"modelgate/{model}/audit").experiment_id])
    written = [proc.stdout, proc.stderr, repr([(r.data.tags, r.data.params) for r in audit]),
               git(team.parent, "for-each-ref", "refs/tags", "--format=%(contents)"),
               repr([(r.method, r.path, r.query, r.body) for r in github_fake.requests]),
               modelgate(team, uri, "history", "--json").stdout]
    for text in written:
        for secret in secrets:
            assert secret not in text


SECRETS = {"HF_TOKEN": "hf_fakeSecretForPromotionTest123", "MLFLOW_TRACKING_PASSWORD": "mlflowFakePassword987"}

