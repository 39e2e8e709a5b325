"""The release policy as a matrix: every refusal in pipeline/releasing/policy.py made to happen through the CLI
against a real `mlflow server`, each asserting the exact cause, and that nothing moved."""

from __future__ import annotations

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.core.result import Status
from tests.support.barrier import start_together
from tests.support.git import git
from tests.support.signing import audit_env
from tests.support.team import (
    MANAGERS,
    alias,
    approve,
    make_team,
    model_of,
    modelgate,
    promote,
    record_gate,
    refused,
    released,
)

pytestmark = pytest.mark.integration


def nothing_moved(team, uri):
    model = model_of(team)
    assert alias(uri, model, "production") is None
    assert git(team.parent, "tag", "--list") == ""


def client(uri):
    return MlflowClient(tracking_uri=uri)


def test_rejected_verdict_flipped_to_passed_on_the_version_is_refused(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1, verdict=Status.FAILED)
    client(uri).set_model_version_tag(model, v1, "modelgate.verdict", "passed")
    for proc in (approve(team, uri, v1), promote(team, uri, v1)):
        refused(proc, f"{model} v{v1}", "verdict 'passed'", "gate run says 'rejected'", "tampered")
    nothing_moved(team, uri)


def test_verdict_flipped_on_the_version_and_the_run_with_its_exit_code_relogged_is_refused(team, mlflow_server):
    """Tags and metrics of a run can be written again by anyone with write access; params cannot. The gate's
    verdict and exit code are also params, and promotion believes those."""
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1, verdict=Status.FAILED)
    c = client(uri)
    run_id = c.get_model_version(model, v1).run_id
    c.set_model_version_tag(model, v1, "modelgate.verdict", "passed")
    c.set_tag(run_id, "modelgate.verdict", "passed")
    c.log_metric(run_id, "gate.exit_code", 0)
    for proc in (approve(team, uri, v1), promote(team, uri, v1)):
        refused(proc, "tampered", "verdict")
    nothing_moved(team, uri)


def test_exit_code_flipped_alone_is_refused(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1, verdict=Status.INCONCLUSIVE)
    assert approve(team, uri, v1).returncode == 0
    c = client(uri)
    c.log_metric(c.get_model_version(model, v1).run_id, "gate.exit_code", 0)
    refused(promote(team, uri, v1, "alice", "--override-reason", "looked fine"), "tampered", "exit code")
    nothing_moved(team, uri)


def test_version_without_a_gate_run_is_refused(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    record_gate(team, uri, 1)
    c = client(uri)
    forged = c.create_model_version(model, "s3://forged-bucket/weights", tags={"modelgate.verdict": "passed"})
    c.set_registered_model_alias(model, "candidate", forged.version)
    refused(approve(team, uri, forged.version), "was not registered by a modelgate gate")
    refused(promote(team, uri, forged.version), "was not registered by a modelgate gate")
    nothing_moved(team, uri)


def test_version_whose_gate_run_id_names_another_run_is_refused(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1)
    v2 = record_gate(team, uri, 2, verdict=Status.FAILED)
    c = client(uri)
    other_run = c.get_model_version(model, v1).run_id
    c.set_model_version_tag(model, v2, "modelgate.gate_run_id", other_run)
    c.set_model_version_tag(model, v2, "modelgate.verdict", "passed")
    for proc in (approve(team, uri, v2), promote(team, uri, v2)):
        refused(proc, f"tag modelgate.gate_run_id {other_run} does not match")
    nothing_moved(team, uri)


def test_version_whose_gate_run_was_deleted_is_refused(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1)
    assert approve(team, uri, v1).returncode == 0
    c = client(uri)
    c.delete_run(c.get_model_version(model, v1).run_id)
    refused(promote(team, uri, v1), f"{model} v{v1}", "gate run", "deleted")
    nothing_moved(team, uri)


@pytest.mark.parametrize("required", [2, 3])
def test_required_approvals_count_distinct_managers_other_than_the_author(tmp_path, mlflow_server, required):
    managers = ["alice", "bob@example.com", "carol", "dave"]
    team = make_team(tmp_path / "team", f"pol-approvals-{required}", approvals=required)
    data = yaml.safe_load(team.read_text())
    data["promotion"]["release_managers"] = managers
    team.write_text(yaml.safe_dump(data, sort_keys=False))
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1, author="dave")
    assert approve(team, uri, v1, actor="alice").returncode == 0
    again = approve(team, uri, v1, actor="ALICE")  # the same manager, another spelling: counted once
    assert again.returncode == 0 and "already approved" in again.stdout, again.stdout + again.stderr
    refused(approve(team, uri, v1, actor="dave"), "authored")  # the author's approval never counts
    for helper in managers[1:required - 1]:
        assert approve(team, uri, v1, actor=helper).returncode == 0
    refused(promote(team, uri, v1), f"needs {required} approval(s)", "approved by alice")
    nothing_moved(team, uri)
    assert approve(team, uri, v1, actor=managers[required - 1]).returncode == 0
    proc = promote(team, uri, v1)
    assert proc.returncode == 0, proc.stderr
    assert alias(uri, model, "production") == v1


def test_nobody_may_act_when_the_release_managers_list_is_empty(team, mlflow_server):
    uri = mlflow_server
    v1 = record_gate(team, uri, 1)
    assert approve(team, uri, v1).returncode == 0
    data = yaml.safe_load(team.read_text())
    data["promotion"]["release_managers"] = []
    team.write_text(yaml.safe_dump(data, sort_keys=False))
    for proc in (approve(team, uri, v1, actor="bob@example.com"), promote(team, uri, v1),
                 modelgate(team, uri, "rollback", "--to", v1, "--actor", "alice", "--reason", "x")):
        refused(proc, "promotion.release_managers is empty: nobody may")
    nothing_moved(team, uri)


@pytest.mark.parametrize("blank", ["", "   "], ids=["empty", "spaces"])
def test_blank_reasons_are_refused_and_record_nothing(team, mlflow_server, blank):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1, verdict=Status.INCONCLUSIVE)
    proc = approve(team, uri, v1, reason=blank)
    assert proc.returncode == 2 and "--reason" in proc.stderr, proc.stderr
    assert approve(team, uri, v1).returncode == 0
    refused(promote(team, uri, v1, "bob@example.com", "--override-reason", blank), "--override-reason")
    nothing_moved(team, uri)
    released_v = released(team, uri, 2)
    proc = modelgate(team, uri, "rollback", "--to", v1, "--actor", "alice", "--reason", blank)
    assert proc.returncode == 2 and "--reason" in proc.stderr, proc.stderr
    assert alias(uri, model, "production") == released_v


def test_two_promotions_released_together_have_exactly_one_winner_every_time(tmp_path, mlflow_server):
    """Both promotions start behind a barrier (imports done, then released at once), three times over."""
    winners = []
    for round_ in range(3):
        team = make_team(tmp_path / f"team{round_}", f"pol-race-{round_}")
        uri, model = mlflow_server, model_of(team)
        v1, v2 = record_gate(team, uri, 1), record_gate(team, uri, 2)
        for v in (v1, v2):
            assert approve(team, uri, v).returncode == 0
        children = start_together(tmp_path / f"barrier{round_}",
                                  [["promote", "--version", v, "--actor", MANAGERS[0], "--config", str(team)]
                                   for v in (v1, v2)],
                                  env={"MLFLOW_TRACKING_URI": uri, "MODELGATE_ACTOR": None, **audit_env()})
        results = [child.finish(timeout_s=120) for child in children]
        codes = [code for code, _, _ in results]
        assert sorted(codes) == [0, 6], results
        winner = (v1, v2)[codes.index(0)]
        assert alias(uri, model, "production") == winner
        assert git(team.parent, "tag", "--list") == f"{model}/v{winner}"
        winners.append(codes.index(0))
    print(f"winners by launch position over 3 rounds: {winners}")
