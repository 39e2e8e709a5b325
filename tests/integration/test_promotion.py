"""Promotion, approval rules, rollback, history and resolve against a real `mlflow server` and real git."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from pipeline.core.result import Status
from tests.support.git import AUTHOR, git
from tests.support.records import rewrite_record, version_record
from tests.support.team import (
    alias,
    approve,
    make_team,
    model_of,
    modelgate,
    pin_digests,
    promote,
    record_gate,
    released,
    revision,
    set_candidate,
)

pytestmark = pytest.mark.integration


def test_approved_passed_version_is_promoted_with_alias_tag_and_audit(release_tracking, team):
    uri = release_tracking
    v1 = record_gate(team, uri, 1)
    proc = modelgate(team, uri, "approve", "--version", v1, "--actor", "alice", "--reason", "read the report")
    assert proc.returncode == 0, proc.stderr
    assert f"approved {model_of(team)} v{v1} by alice" in proc.stdout
    proc = modelgate(team, uri, "promote", "--version", "candidate", "--actor", "bob@example.com")
    assert proc.returncode == 0, proc.stderr
    model = model_of(team)
    assert alias(uri, model, "production") == v1 and alias(uri, model, "previous") is None
    tag = git(team.parent, "for-each-ref", f"refs/tags/{model}/v{v1}", "--format=%(contents)")
    assert f"revision: {revision(1)}" in tag and "approved_by: alice" in tag
    assert "sha256 config.json: " + pin_digests(1)["config.json"] in tag
    remote = team.parent.parent / "team-origin.git"
    assert git(remote, "tag", "--list") == f"{model}/v{v1}"
    proc = modelgate(team, uri, "resolve", "production", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["revision"] == revision(1) and doc["served_name"] == f"chat@{revision(1)[:12]}" and doc["version"] == v1
    proc = modelgate(team, uri, "history", "--json")
    events = [(e["event"], e.get("version"), e.get("actor")) for e in json.loads(proc.stdout)["events"]]
    assert events == [("gate", v1, AUTHOR), ("approve", v1, "alice"), ("promote", v1, "bob@example.com")]


def audit_runs(uri, model):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(f"modelgate/{model}/audit")
    return client.search_runs([exp.experiment_id]) if exp else []


def test_approval_rules_refuse_with_exit_5_and_record_nothing(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1)
    cases = [
        (approve(team, uri, v1, actor="mallory"), "'mallory' is not a release manager"),
        (promote(team, uri, v1), "needs 1 approval(s)"),
        (promote(team, uri, v1, "mallory"), "'mallory' is not a release manager"),
    ]
    for proc, message in cases:
        assert proc.returncode == 5, proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert audit_runs(uri, model) == []
    assert alias(uri, model, "production") is None
    assert git(team.parent, "tag", "--list") == ""


def test_self_approval_does_not_count_even_by_a_manager(tmp_path, mlflow_server):
    team = make_team(tmp_path / "team", "it-self-approval")
    v1 = record_gate(team, mlflow_server, 1, author="alice")
    proc = approve(team, mlflow_server, v1, actor="ALICE")
    assert proc.returncode == 5 and "alice authored" in proc.stderr.lower()
    assert approve(team, mlflow_server, v1, actor="bob@example.com").returncode == 0
    again = approve(team, mlflow_server, v1, actor="bob@example.com")
    assert again.returncode == 0 and "already approved" in again.stdout
    assert len(audit_runs(mlflow_server, "it-self-approval")) == 1
    assert promote(team, mlflow_server, v1, "alice").returncode == 0  # the author may press the button


def test_failed_gate_cannot_be_approved_or_promoted(team, mlflow_server):
    uri = mlflow_server
    v1 = record_gate(team, uri, 1, verdict=Status.FAILED)
    proc = approve(team, uri, v1)
    assert proc.returncode == 5 and "gate verdict is 'rejected'" in proc.stderr
    proc = promote(team, uri, v1)
    assert proc.returncode == 5 and "needs 1 approval" not in proc.stderr and "'rejected'" in proc.stderr


def test_inconclusive_gate_needs_an_override_reason(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1, verdict=Status.INCONCLUSIVE)
    assert approve(team, uri, v1).returncode == 0
    proc = promote(team, uri, v1, "bob@example.com")
    assert proc.returncode == 5 and "--override-reason" in proc.stderr
    proc = promote(team, uri, v1, "bob@example.com", "--override-reason", "intent acc within noise, checked by hand")
    assert proc.returncode == 0, proc.stderr
    history = json.loads(modelgate(team, uri, "history", "--json").stdout)
    promo = [e for e in history["events"] if e["event"] == "promote"][0]
    assert promo["override_reason"] == "intent acc within noise, checked by hand"
    assert alias(uri, model, "production") == v1


def test_stale_gate_is_refused_after_production_moved(team, mlflow_server):
    uri = mlflow_server
    v1 = record_gate(team, uri, 1)
    v2 = record_gate(team, uri, 2)  # judged against no production version
    for v in (v1, v2):
        assert approve(team, uri, v).returncode == 0
    assert promote(team, uri, v1).returncode == 0
    proc = promote(team, uri, v2)
    assert proc.returncode == 5 and "stale" in proc.stderr and f"production is now v{v1}" in proc.stderr
    v3 = record_gate(team, uri, 2)  # the same pin re-gated against v1
    assert approve(team, uri, v3).returncode == 0
    assert promote(team, uri, v3).returncode == 0, "re-gated: not stale"


def test_rollback_restores_previous_in_seconds_and_is_recorded(release_tracking, team):
    import time

    uri, model = release_tracking, model_of(team)
    v1, v2 = released(team, uri, 1), released(team, uri, 2)
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v2, v1)
    t0 = time.monotonic()
    proc = modelgate(team, uri, "rollback", "--actor", "bob@example.com", "--reason", "p95 latency doubled")
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v1, None)
    print(f"rollback took {took:.1f} s (CLI start included)")
    proc = modelgate(team, uri, "rollback", "--actor", "bob@example.com", "--reason", "again")
    assert proc.returncode == 2 and "no alias 'previous'" in proc.stderr
    proc = modelgate(team, uri, "rollback", "--to", v2, "--actor", "alice", "--reason", "fixed upstream")
    assert proc.returncode == 0, proc.stderr  # v2 was production before: allowed without a new gate
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v2, v1)
    events = json.loads(modelgate(team, uri, "history", "--json").stdout)["events"]
    moves = [(e["event"], e["version"], e["from_version"]) for e in events if e["event"] in ("promote", "rollback")]
    assert moves == [("promote", v1, None), ("promote", v2, v1), ("rollback", v1, v2), ("rollback", v2, v1)]
    text = modelgate(team, uri, "history").stdout
    assert f"rollback  v{v1} from v{v2} by bob@example.com: p95 latency doubled" in text


def test_rollback_target_must_have_passed_or_been_production(team, mlflow_server):
    uri = mlflow_server
    v1 = record_gate(team, uri, 1, verdict=Status.FAILED)
    v2 = record_gate(team, uri, 2)
    approve(team, uri, v2)
    assert promote(team, uri, v2).returncode == 0
    proc = modelgate(team, uri, "rollback", "--to", v1, "--actor", "alice", "--reason", "try")
    assert proc.returncode == 5 and "never production" in proc.stderr


def test_tampered_version_tags_are_refused_at_promotion(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1)
    approve(team, uri, v1)
    client = MlflowClient(tracking_uri=uri)
    files = version_record(uri, model, v1)["files"]  # the file digests are the gate run's version.json
    rewrite_record(uri, model, v1, files={**files, "model.safetensors": "c" * 64})
    proc = promote(team, uri, v1)
    assert proc.returncode == 5 and "tampered" in proc.stderr and "model.safetensors" in proc.stderr
    rewrite_record(uri, model, v1, files=files)
    client.set_model_version_tag(model, v1, "modelgate.verdict", "passed")
    client.set_model_version_tag(model, v1, "modelgate.revision", revision(9))
    proc = promote(team, uri, v1)
    assert proc.returncode == 5 and "modelgate.revision" in proc.stderr and revision(9) in proc.stderr
    assert alias(uri, model, "production") is None


def test_unknown_version_and_alias_are_bad_input(team, mlflow_server):
    uri = mlflow_server
    record_gate(team, uri, 1)
    for args, needle in [(("promote", "--version", "99", "--actor", "alice"), "has no version 99"),
                         (("approve", "--version", "production", "--actor", "alice", "--reason", "x"),
                          "no alias 'production'"),
                         (("resolve", "production"), "no alias 'production'")]:
        proc = modelgate(team, uri, *args)
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
        assert proc.stderr.startswith("modelgate: error:")


def test_pinned_means_the_newest_gate_of_the_merged_pin(team, mlflow_server):
    """After a merge, the promote workflow promotes `pinned`: the gate of release.yaml's current pin, not
    whatever another pull request gated last (`candidate`)."""
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1)
    record_gate(team, uri, 2)  # another PR's gate moves `candidate`
    import yaml

    set_candidate(team, 1)  # main holds pin 1 (what was merged), with its file digests
    data = yaml.safe_load(team.read_text())
    assert approve(team, uri, "pinned").returncode == 0
    assert promote(team, uri, "pinned").returncode == 0
    assert alias(uri, model, "production") == v1
    data["candidate"]["revision"] = revision(7)
    team.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = promote(team, uri, "pinned")
    assert proc.returncode == 2 and "no gated version" in proc.stderr
