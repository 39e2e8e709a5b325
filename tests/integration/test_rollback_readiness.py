"""Rollback readiness against a real `mlflow server` and real git hubs: a promotion proves that the version
becoming `previous` can still be fetched byte for byte, `rollback` verifies its target, `rollback --check`
rehearses, and `history` says when the path was last proven. (vLLM is not booted here: `--serve` is run with
the boot injected, see test_rehearsal_with_serve_records_the_boot; tests/e2e/test_rollback_readiness_e2e.py boots
the real demo model.)"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from mlflow.tracking import MlflowClient

from pipeline.core.result import Status
from tests.support.git import git
from tests.support.signing import audit_env
from tests.support.team import (
    alias,
    approve,
    forget_pin,
    hub_of,
    model_of,
    modelgate,
    promote,
    record_gate,
    released,
    revision,
    swap_weights,
)

pytestmark = pytest.mark.integration


def version_tags(uri, model, version):
    return MlflowClient(tracking_uri=uri).get_model_version(model, version).tags


def events(config, uri, kind=None):
    proc = modelgate(config, uri, "history", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    return doc, [e for e in doc["events"] if kind is None or e["event"] == kind]


def test_promotion_over_a_previous_whose_commit_is_gone_or_hub_moved_is_refused_unless_overridden(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = released(team, uri, 1)
    v2 = record_gate(team, uri, 2)
    assert approve(team, uri, v2).returncode == 0
    forget_pin(team, 1)  # the hub was rewritten: v1's commit is garbage-collected

    proc = promote(team, uri, v2, "bob@example.com")
    assert proc.returncode == 5, proc.stderr
    assert f"rollback to {model} v{v1} is NOT ready" in proc.stderr
    assert f"revision {revision(1)} is no longer served by hub/model" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("modelgate: Refused: the rollback path is broken")
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v1, None), "nothing moved"
    _, promotions = events(team, uri, "promote")
    assert [e["version"] for e in promotions] == [v1], "the refused promotion opened no audit run"
    tags = version_tags(uri, model, v1)
    assert tags["modelgate.rollback_check.outcome"] == "not-ready"
    assert tags["modelgate.rollback_check.how"] == "at promotion"
    assert tags["modelgate.rollback_check.by"] == "bob@example.com"
    assert "modelgate.rollback_check.proven_at" not in tags

    why = "v1's hub was rewritten; v2 fixes the outage, rollback would go to a re-published v1"
    proc = promote(team, uri, v2, "bob@example.com", "--override-reason", why)
    assert proc.returncode == 0, proc.stderr
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v2, v1)
    doc, promotions = events(team, uri, "promote")
    last = promotions[-1]
    assert last["version"] == v2 and last["rollback_ready"] == "overridden"
    assert last["rollback_ready_override"] == why and last["rollback_ready_version"] == v1
    assert "no longer served by hub/model" in last["rollback_ready_detail"]
    text = modelgate(team, uri, "history").stdout
    assert f"rollback path to v{v1} NOT proven, overridden: {why}" in text
    assert f"rollback path: previous v{v1} NOT READY at its last check" in text and "never proven" in text

    # the hub moves: a cached copy that is fine does not help, a cache hit asks the source first
    proc = modelgate(team, uri, "rollback", "--check", "--to", v2, "--actor", "alice")
    assert proc.returncode == 0, proc.stderr  # v2 is now in the model cache
    v3 = record_gate(team, uri, 3)
    assert approve(team, uri, v3).returncode == 0
    shutil.move(hub_of(team), team.parent / "hub" / "moved")
    proc = promote(team, uri, v3)
    assert proc.returncode == 5 and f"revision {revision(2)} is no longer served by hub/model" in proc.stderr, \
        proc.stderr
    assert alias(uri, model, "production") == v2


def test_promotion_over_a_previous_whose_bytes_changed_is_refused_naming_the_file(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = released(team, uri, 1)
    v2 = record_gate(team, uri, 2)
    assert approve(team, uri, v2).returncode == 0
    swap_weights(team, 1)  # same commit, same path, other bytes
    proc = promote(team, uri, v2)
    assert proc.returncode == 5, proc.stderr
    assert "no longer match the recorded digests" in proc.stderr and "'model.safetensors'" in proc.stderr
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v1, None)


def test_rollback_check_rehearses_records_and_moves_nothing(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1, v2 = released(team, uri, 1), released(team, uri, 2)
    doc, promotions = events(team, uri, "promote")
    assert promotions[-1]["rollback_ready"] == "ready" and promotions[-1]["rollback_ready_version"] == v1
    assert doc["rollback_path"]["version"] == v1 and doc["rollback_path"]["proven_how"] == "at promotion"

    proc = modelgate(team, uri, "rollback", "--check", "--actor", "carol")  # not a manager: a rehearsal is safe
    assert proc.returncode == 0, proc.stderr
    assert f"rollback to {model} v{v1} is ready (rehearsal)" in proc.stdout and "nothing moved" in proc.stdout
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v2, v1)
    tags = version_tags(uri, model, v1)
    assert (tags["modelgate.rollback_check.outcome"], tags["modelgate.rollback_check.by"],
            tags["modelgate.rollback_check.how"]) == ("ready", "carol", "rehearsal")
    assert tags["modelgate.rollback_check.proven_at"] == tags["modelgate.rollback_check.at"]
    doc, checks = events(team, uri, "rollback-check")
    assert [(e["version"], e["actor"], e["outcome"], e["how"]) for e in checks] == [(v1, "carol", "ready", "rehearsal")]
    path = doc["rollback_path"]
    assert (path["proven_by"], path["proven_how"], path["proven_at"]) == ("carol", "rehearsal", checks[0]["at"])
    text = modelgate(team, uri, "history").stdout
    assert f"rollback path: previous v{v1} last proven {checks[0]['at']} (rehearsal, by carol)" in text
    assert f"rollback-check v{v1} ready (rehearsal) by carol" in text

    forget_pin(team, 1)
    proc = modelgate(team, uri, "rollback", "--check", "--actor", "carol")
    assert proc.returncode == 5, proc.stderr
    assert f"revision {revision(1)} is no longer served by hub/model" in proc.stderr
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v2, v1)
    doc, checks = events(team, uri, "rollback-check")
    assert [e["outcome"] for e in checks] == ["ready", "not-ready"]
    assert doc["rollback_path"]["proven_how"] == "rehearsal", "the last proof is kept"
    assert doc["rollback_path"]["last_check"]["outcome"] == "not-ready"
    assert version_tags(uri, model, v1)["modelgate.rollback_check.outcome"] == "not-ready"
    text = modelgate(team, uri, "history").stdout
    assert f"rollback path: previous v{v1} NOT READY at its last check" in text

    proc = modelgate(team, uri, "rollback", "--check")
    assert proc.returncode == 2 and "--actor" in proc.stderr
    v3 = record_gate(team, uri, 3, verdict=Status.FAILED)  # the rehearsal applies the rollback's policy too
    proc = modelgate(team, uri, "rollback", "--check", "--to", v3, "--actor", "alice")
    assert proc.returncode == 5 and "never production" in proc.stderr, proc.stderr
    assert version_tags(uri, model, v3)["modelgate.rollback_check.outcome"] == "not-ready"


def test_rollback_to_an_unverifiable_target_is_refused_and_nothing_moves(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1, v2 = released(team, uri, 1), released(team, uri, 2)
    swap_weights(team, 1, b"tampered")
    cold = {"MODELGATE_HOME": str(team.parent / "cold-cache")}  # no cached copy: the rollback fetches from the hub
    proc = modelgate(team, uri, "rollback", "--actor", "bob@example.com", "--reason", "p95 doubled", **cold)
    assert proc.returncode == 5, proc.stderr
    assert "cannot roll back" in proc.stderr and "'model.safetensors'" in proc.stderr
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v2, v1)
    _, rollbacks = events(team, uri, "rollback")
    assert rollbacks == []
    git(hub_of(team), "replace", "-d", git(hub_of(team), "replace", "-l"))  # the hub serves the right bytes again
    proc = modelgate(team, uri, "rollback", "--actor", "bob@example.com", "--reason", "p95 doubled", **cold)
    assert proc.returncode == 0, proc.stderr
    assert (alias(uri, model, "production"), alias(uri, model, "previous")) == (v1, None)
    doc, rollbacks = events(team, uri, "rollback")
    assert rollbacks[-1]["rollback_ready"] == "ready" and rollbacks[-1]["rollback_ready_version"] == v1
    assert doc["rollback_readiness"][v1]["proven_how"] == "at rollback"


def test_rehearsal_with_serve_records_the_boot(team, mlflow_server, monkeypatch):
    """`--serve` with the vLLM boot injected (the boot and probe themselves are the gate's, tested there). Held
    by the rollback workflow, the audit key seals the rehearsals, so `history` believes them."""
    from pipeline.config.release import load_release
    from pipeline.errors import BadInput
    from pipeline.releasing.readiness import rehearse

    uri, model = mlflow_server, model_of(team)
    v1 = released(team, uri, 1)
    released(team, uri, 2)
    release, home = load_release(team), team.parent / ".modelgate"
    for key, value in audit_env().items():
        monkeypatch.setenv(key, value)
    booted = []

    def boot(release, model_dir, pin, log_file, progress):
        booted.append((model_dir, pin.revision))
        return len(booted) == 1, "served and answered" if len(booted) == 1 else "does not load in vLLM: bad header"

    first = rehearse(release, uri, None, "alice", home=home, serve=True, progress=lambda _: None, boot=boot)
    assert first.ready and first.how == "rehearsal with serve" and "served and answered" in first.detail
    assert booted[0] == (first.path, revision(1)) and (first.path / "model.safetensors").is_file()
    second = rehearse(release, uri, v1, "alice", home=home, serve=True, progress=lambda _: None, boot=boot)
    assert not second.ready and second.detail == "does not load in vLLM: bad header"
    doc, checks = events(team, uri, "rollback-check")
    assert [(e["outcome"], e["how"]) for e in checks] == [("ready", "rehearsal with serve"),
                                                          ("not-ready", "rehearsal with serve")]
    assert doc["rollback_path"]["proven_how"] == "rehearsal with serve"
    assert version_tags(uri, model, v1)["modelgate.rollback_check.outcome"] == "not-ready"

    external = dataclasses.replace(release, serving=dataclasses.replace(release.serving, mode="external",
                                                                        external_url="http://127.0.0.1:9"))
    with pytest.raises(BadInput, match="serving.mode is external"):
        rehearse(external, uri, None, "alice", home=home, serve=True, boot=boot)
    assert len(booted) == 2
