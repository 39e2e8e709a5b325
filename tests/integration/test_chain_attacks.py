"""The chain from a signed release gate to what production serves, attacked on the team's real tracking server
(PostgreSQL + `mlflow server --app-name basic-auth`, users from mlflow/setup_users.py). The attacker holds the
release MLflow credential (the promote and rollback workflows read it from repository secrets) but neither the
release gate's signing key nor the production environment's audit key. Each attack of issue 25 is refused with
exit 5 naming the broken link, or (the baseline) stops the gate with exit 7; nothing moves."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config.release import load_release
from pipeline.core.result import Status
from pipeline.errors import EXIT_BASELINE_UNVERIFIED, BaselineUnverified
from pipeline.releasing import signing
from tests.support.git import git
from tests.support.signing import AUDIT_KEY, KEY, SigningKey
from tests.support.team import (
    alias,
    approve,
    make_team,
    model_of,
    modelgate,
    pin_digests,
    promote,
    record_gate,
    refused,
    released,
    revision,
)
from tests.support.team_server import setup_team

pytestmark = pytest.mark.integration


@pytest.fixture
def attack(tmp_path, team_server, team_users, monkeypatch):
    """A team on the team server; this process (the commands and the attacker's MLflow client alike) holds the
    release credential, as a workflow of any branch could. (config, uri, client)."""
    for key, value in team_users["release"].env().items():
        monkeypatch.setenv(key, value)
    config = make_team(tmp_path / "team", f"atk-{uuid.uuid4().hex[:8]}", approvals=1)
    setup_team(team_server, config)
    return config, team_server.uri, MlflowClient(tracking_uri=team_server.uri)


def audit_experiment(client: MlflowClient, config: Path) -> str:
    return client.get_experiment_by_name(load_release(config).audit_experiment).experiment_id


def forge_event(client: MlflowClient, config: Path, event: str, version: str, actor: str, **extra: str) -> str:
    """An audit run written with the release credential alone: every tag a real one has, a seal copied from
    a real event of the trail when there is one (it covers another run id and other tags)."""
    exp = audit_experiment(client, config)
    real = client.search_runs([exp], "tags.`modelgate.seal` != ''", max_results=1)
    tags = {"modelgate.kind": "audit", "modelgate.event": event, "modelgate.model_name": model_of(config),
            "modelgate.version": version, "modelgate.actor": actor, "modelgate.at": "2026-12-07T06:00:00+00:00",
            "modelgate.reason": "looks fine", "modelgate.state": "completed", "modelgate.via": "local attacker",
            **({"modelgate.seal": real[0].data.tags["modelgate.seal"]} if real else {}),
            **{f"modelgate.{k}": v for k, v in extra.items()}}
    run = client.create_run(exp, tags=tags).info.run_id
    client.set_terminated(run)
    return run


def resolve(config, uri):
    return modelgate(config, uri, "resolve", "production", "--json")


def test_an_alias_moved_by_api_to_an_unsigned_version_is_never_handed_to_a_deployment(attack):
    config, uri, client = attack
    model = model_of(config)
    v1 = released(config, uri, 1)
    assert json.loads(resolve(config, uri).stdout)["version"] == v1
    v3 = record_gate(config, uri, 3)  # signed and approved, gated against v1
    assert approve(config, uri, v3).returncode == 0
    v2 = record_gate(config, uri, 2, key=None)  # an unsigned version: no release gate signed it
    client.set_registered_model_alias(model, "production", v2)  # MLflow's API, the release credential alone
    refused(resolve(config, uri), "link `production` alias", f"points at {model} v{v2}",
            f"made v{v1} production", f"modelgate rollback --to {v1}")
    history = modelgate(config, uri, "history")
    assert history.returncode == 0 and f"NOT VERIFIED: link `production` alias: it points at {model} v{v2}" \
        in history.stdout, history.stdout
    refused(promote(config, uri, v3), "link `production` alias")  # nothing builds on a moved alias
    with pytest.raises(BaselineUnverified, match="link `production` alias"):  # no gate pairs with it either
        record_gate(config, uri, 4)
    # the one-click rollback restores the verified version, and the hand-off works again
    proc = modelgate(config, uri, "rollback", "--to", v1, "--actor", "bob@example.com", "--reason", "alias moved")
    assert proc.returncode == 0, proc.stderr
    assert "this rollback restores a verified version" in proc.stderr
    assert json.loads(resolve(config, uri).stdout)["version"] == v1


def test_an_alias_moved_to_a_signed_version_that_was_never_promoted_is_refused_too(attack):
    config, uri, client = attack
    model = model_of(config)
    released(config, uri, 1)
    v2 = record_gate(config, uri, 2)  # signed and passed, but nobody approved or promoted it
    client.set_registered_model_alias(model, "production", v2)
    refused(resolve(config, uri), "link `production` alias", "moved outside modelgate")


def test_forged_audit_events_are_ignored_and_cannot_make_a_version_production(attack):
    config, uri, client = attack
    model = model_of(config)
    v1 = released(config, uri, 1)
    v2 = record_gate(config, uri, 2, key=None)  # unsigned
    forge_event(client, config, "approve", v2, "alice")
    forge_event(client, config, "promote", v2, "alice", from_version=v1, steps="aliases,tag,github")
    client.set_registered_model_alias(model, "production", v2)
    refused(resolve(config, uri), "link `production` alias", f"audit event(s) for v{v2} do not verify")
    history = modelgate(config, uri, "history")
    assert history.stdout.count("[UNVERIFIED: ") == 2, history.stdout
    assert "does not verify with key" in history.stdout  # the copied seal covers another run and other tags
    # `rollback --to` the forged version: it was never production by any verified event, and it is unsigned
    proc = modelgate(config, uri, "rollback", "--to", v2, "--actor", "bob@example.com", "--reason", "x")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    warning, error = proc.stderr.strip().splitlines()
    assert "link `production` alias" in warning and f"{model} v{v2} is unsigned" in error
    assert alias(uri, model, "production") == v2  # (the attacker's move stands until a manager restores it)


def test_forged_approvals_do_not_count_towards_the_approvals_required(attack):
    config, uri, client = attack
    data = yaml.safe_load(config.read_text())
    data["promotion"]["approvals_required"] = 2
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    git(config.parent, "commit", "--quiet", "-am", "two approvals")
    v1 = record_gate(config, uri, 1)
    assert approve(config, uri, v1, actor="alice").returncode == 0
    forge_event(client, config, "approve", v1, "bob@example.com", revision=revision(1))
    refused(promote(config, uri, v1), "needs 2 approval(s)", "approved by alice",
            "1 approval record(s) ignored: not sealed by a trusted audit key")
    assert alias(uri, model_of(config), "production") is None


def test_an_approval_or_promotion_without_the_audit_key_is_refused_before_anything_is_written(attack):
    config, uri, client = attack
    v1 = record_gate(config, uri, 1)
    refused(modelgate(config, uri, "approve", "--version", v1, "--actor", "alice", "--reason", "ok",
                      MODELGATE_AUDIT_KEY=None), "the audit key must be in $MODELGATE_AUDIT_KEY")
    stranger = SigningKey.new()  # a key the release does not trust
    refused(modelgate(config, uri, "promote", "--version", v1, "--actor", "alice", MODELGATE_AUDIT_KEY=stranger.pem),
            f"({stranger.id}) is not in signing.audit_keys")
    assert client.search_runs([audit_experiment(client, config)]) == []


def test_a_version_copying_a_signed_gate_run_with_another_source_is_refused(attack):
    config, uri, client = attack
    model = model_of(config)
    v1 = record_gate(config, uri, 1)
    real = client.get_model_version(model, v1)
    evil = f"git://evil.example/model@{revision(1)}"
    copy = client.create_model_version(model, source=evil, run_id=real.run_id, tags=real.tags).version
    refused(approve(config, uri, copy), "MLflow source", evil)
    refused(promote(config, uri, copy), "MLflow source")
    client.set_registered_model_alias(model, "production", copy)
    refused(resolve(config, uri), "link `production` alias")


def test_a_rewritten_baseline_stops_the_next_gate_with_exit_7(attack, tmp_path):
    config, uri, client = attack
    model = model_of(config)
    v1 = record_gate(config, uri, 1, cases=12)
    assert approve(config, uri, v1).returncode == 0 and promote(config, uri, v1).returncode == 0
    run = client.get_model_version(model, v1).run_id
    items = json.loads(open(client.download_artifacts(run, "items.json", str(tmp_path))).read())
    items["items"] = {m: dict.fromkeys(vals, 0.0) for m, vals in items["items"].items()}  # production "was bad"
    forged = tmp_path / "forged" / "items.json"
    forged.parent.mkdir()
    forged.write_text(json.dumps(items))
    client.log_artifact(run, str(forged))
    with pytest.raises(BaselineUnverified, match=r"production baseline .* does not verify: .* items_sha256 \(signed"
                       ) as caught:
        record_gate(config, uri, 2, Status.PASSED, cases=12)
    assert caught.value.exit_code == EXIT_BASELINE_UNVERIFIED == 7
    # nothing was recorded for the stopped gate: pin 2 has no version
    assert [v.version for v in client.search_model_versions(f"name='{model}'")] == [v1]


def test_a_retired_key_signing_now_with_a_backdated_time_is_refused(attack, tmp_path):
    config, uri, client = attack
    model = model_of(config)
    retired = SigningKey.new()
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    data = yaml.safe_load(config.read_text())
    data["signing"]["public_keys"] = [retired.entry(not_before="2020-01-01", not_after=yesterday), KEY.entry()]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    git(config.parent, "commit", "--quiet", "-am", "rotation: the old key retired yesterday")
    v1 = record_gate(config, uri, 1, key=None)  # recorded now, unsigned; the thief signs it with the retired key
    run = client.get_model_version(model, v1).run_id
    report = client.download_artifacts(run, "report.json", str(tmp_path))
    items = client.download_artifacts(run, "items.json", str(tmp_path))
    from pipeline.report.document import GateReport

    stmt = signing.statement(GateReport.load(Path(report)), run_id=run, key_id=retired.id,
                             report_sha256=signing.sha256_hex(Path(report).read_bytes()),
                             items_sha256=signing.sha256_hex(Path(items).read_bytes()),
                             signed_at="2021-06-01T00:00:00+00:00")  # inside the retired key's window
    out = tmp_path / "signature"
    out.mkdir()
    (out / "statement.json").write_bytes(signing.canonical(stmt))
    (out / "statement.sig").write_text(base64.b64encode(retired.signer().sign(stmt)).decode())
    client.log_artifact(run, str(out / "statement.json"), artifact_path="signature")
    client.log_artifact(run, str(out / "statement.sig"), artifact_path="signature")
    client.set_model_version_tag(model, v1, signing.STATUS_TAG, signing.SIGNED)
    refused(approve(config, uri, v1), "recorded by the tracking server at", f"outside the validity window of key "
                                                                              f"{retired.id}")
    refused(promote(config, uri, v1), "recorded by the tracking server at")


def test_the_audit_trail_seals_every_event_and_history_shows_them_verified(attack):
    config, uri, client = attack
    v1 = released(config, uri, 1)
    proc = modelgate(config, uri, "history", "--json")
    events = [e for e in json.loads(proc.stdout)["events"] if e["event"] != "gate"]
    assert [(e["event"], e["verified"]) for e in events] == [("approve", True), ("promote", True)]
    doc = json.loads(resolve(config, uri).stdout)
    assert doc["version"] == v1 and doc["verified"]["signed_by"] == KEY.id
    assert doc["verified"]["alias"] == "matches the verified audit trail"
    assert doc["files"] == pin_digests(1)
    runs = client.search_runs([audit_experiment(client, config)])
    assert runs and all(json.loads(r.data.tags["modelgate.seal"])["key_id"] == AUDIT_KEY.id for r in runs)


def test_deleting_the_last_promotion_from_the_trail_to_revert_production_is_refused(attack, team_server,
                                                                                   monkeypatch):
    config, uri, client = attack
    model = model_of(config)
    v1 = released(config, uri, 1)
    v2 = released(config, uri, 2)
    runs = client.search_runs([audit_experiment(client, config)], "tags.`modelgate.event` = 'promote'",
                              order_by=["attributes.start_time DESC"])
    last = runs[0].info.run_id  # the promotion of v2
    with pytest.raises(MlflowException, match="403"):  # deleting a run needs MANAGE: the release credential has EDIT
        client.delete_run(last)
    for key, value in team_server.admin.env().items():  # an admin of the tracking server can
        monkeypatch.setenv(key, value)
    client.delete_run(last)  # gone from the trail the reader sees
    client.set_registered_model_alias(model, "production", v1)  # and the alias where the remaining trail says
    refused(resolve(config, uri), "link audit trail", "were deleted in MLflow", last, f"promote of v{v2}")
    client.restore_run(last)
    client.set_registered_model_alias(model, "production", v2)
    assert json.loads(resolve(config, uri).stdout)["version"] == v2
