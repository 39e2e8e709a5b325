"""Signed gate records on a real `mlflow server`: only a release gate signed with a key release.yaml trusts (in
its validity window), whose statement matches the MLflow record, is approved or promoted; everything else is
refused with exit 5 and nothing moves. Advisory (pull request) gates are recorded apart and never promotable."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.config.release import load_release
from pipeline.core.result import StageResult, Status
from pipeline.gate.run import run_gate
from pipeline.releasing import signing
from tests.support.git import git
from tests.support.records import legacy_tags, rewrite_record, to_legacy_layout, version_record
from tests.support.signing import KEY, SigningKey
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
    revision,
    set_candidate,
)

pytestmark = pytest.mark.integration


def promotions(uri, model):
    """The promote/rollback audit runs of the model (approvals are audit runs too, but move nothing)."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(f"modelgate/{model}/audit")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return [r for r in runs if r.data.tags.get("modelgate.event") in ("promote", "rollback")]


def assert_nothing_moved(team, uri):
    model = model_of(team)
    assert alias(uri, model, "production") is None and alias(uri, model, "previous") is None
    assert git(team.parent, "tag", "--list") == ""
    assert promotions(uri, model) == []


def set_keys(config, *entries):
    data = yaml.safe_load(config.read_text())
    data["signing"] = {**data.get("signing", {}), "public_keys": list(entries)}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    git(config.parent, "commit", "--quiet", "-am", "signing keys")


def test_signed_release_gate_records_the_statement_on_the_run_and_the_version(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1)
    client = MlflowClient(tracking_uri=uri)
    mv = client.get_model_version(model, v1)
    # few, short tags; the signature, the file digests and the rest of the record are the gate run's artifacts
    assert mv.tags == {"modelgate.verdict": "passed", "modelgate.revision": revision(1),
                       "modelgate.gate_run_id": mv.run_id, "modelgate.baseline_version": "",
                       signing.STATUS_TAG: "signed"}
    record = version_record(uri, model, v1)
    assert record["files"] == pin_digests(1) and record["gate_kind"] == "release" and record["author"]
    local = client.download_artifacts(mv.run_id, "signature/statement.json")
    stmt = json.loads(open(local).read())
    report = open(client.download_artifacts(mv.run_id, "report.json"), "rb").read()
    assert stmt["run_id"] == mv.run_id and stmt["revision"] == revision(1) and stmt["verdict"] == "passed"
    assert stmt["report_sha256"] == signing.sha256_hex(report) and stmt["files"] == pin_digests(1)
    assert stmt["config_digest"] == signing.config_digest(load_release(team).raw) and stmt["key_id"] == KEY.id
    assert stmt["digests"] == record["digests"]
    sig = open(client.download_artifacts(mv.run_id, "signature/statement.sig")).read()
    signing.verify(stmt, base64.b64decode(sig), load_release(team).signing_keys, "v1")
    assert approve(team, uri, v1).returncode == 0
    assert promote(team, uri, v1).returncode == 0 and alias(uri, model, "production") == v1


def test_unsigned_release_gate_is_refused_and_nothing_moves(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1, key=None)
    assert MlflowClient(tracking_uri=uri).get_model_version(model, v1).tags[signing.STATUS_TAG] == "unsigned"
    refused(approve(team, uri, v1), "is unsigned")
    refused(promote(team, uri, v1), "is unsigned")
    assert_nothing_moved(team, uri)


def test_no_signing_keys_in_release_yaml_refuses_every_promotion(tmp_path, mlflow_server):
    team = make_team(tmp_path / "team", "sg-no-keys", public_keys=[])
    v1 = record_gate(team, mlflow_server, 1)
    refused(promote(team, mlflow_server, v1), "no signing keys configured")
    assert_nothing_moved(team, mlflow_server)


def test_gate_signed_by_a_key_release_yaml_does_not_trust_is_refused(team, mlflow_server):
    """A complete, consistent "passed" record (what a pull request's own code could write with a registry
    credential), signed by a key of its own: refused."""
    uri = mlflow_server
    stranger = SigningKey.new()
    v1 = record_gate(team, uri, 1, key=stranger)
    refused(approve(team, uri, v1), stranger.id, "not in signing.public_keys")
    refused(promote(team, uri, v1), stranger.id, "not in signing.public_keys")
    assert_nothing_moved(team, uri)


def test_a_signature_forged_by_another_key_under_the_trusted_key_id_is_refused(team, mlflow_server, tmp_path):
    """The statement names the trusted key id, but another key signed it: the signature does not verify."""
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1)
    approve(team, uri, v1)
    client = MlflowClient(tracking_uri=uri)
    mv = client.get_model_version(model, v1)
    stmt = json.loads(open(client.download_artifacts(mv.run_id, "signature/statement.json")).read())
    forged = base64.b64encode(SigningKey.new().private.sign(signing.canonical(stmt))).decode()
    path = tmp_path / "signature" / "statement.sig"
    path.parent.mkdir()
    path.write_text(forged + "\n")
    client.log_artifact(mv.run_id, str(path), artifact_path="signature")  # the run's signature replaced
    refused(promote(team, uri, v1), "does not verify")
    client.set_model_version_tag(model, v1, signing.LEGACY_SIGNATURE_TAG, forged)  # or set as a legacy tag
    refused(promote(team, uri, v1), "does not verify")
    assert_nothing_moved(team, uri)


def test_a_signature_copied_onto_another_version_is_refused(team, mlflow_server, tmp_path):
    """v1's valid signature copied onto v2 (an unsigned record): as legacy tags, v2's run holds no statement; as
    the run's artifacts, v1's statement names v1's run."""
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1)
    v2 = record_gate(team, uri, 2, key=None)
    client = MlflowClient(tracking_uri=uri)
    run1, run2 = client.get_model_version(model, v1).run_id, client.get_model_version(model, v2).run_id
    copies = [Path(client.download_artifacts(run1, f"signature/{name}", str(tmp_path)))
              for name in ("statement.sig", "statement.json")]
    client.set_model_version_tag(model, v2, signing.LEGACY_SIGNATURE_TAG, copies[0].read_text().strip())
    refused(promote(team, uri, v2), "holds no signed statement")
    for path in copies:
        client.log_artifact(run2, str(path), artifact_path="signature")
    assert len(client.list_artifacts(run2, "signature")) == 2
    refused(promote(team, uri, v2), "does not match the record", "run_id")
    assert_nothing_moved(team, uri)


def test_a_version_registered_before_version_json_is_still_verified_and_promoted(team, mlflow_server):
    """Stores hold versions whose record and signature are all tags (no version.json): read and verified as such."""
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1)
    to_legacy_layout(uri, model, v1)
    assert approve(team, uri, v1).returncode == 0
    proc = promote(team, uri, v1)
    assert proc.returncode == 0 and alias(uri, model, "production") == v1, proc.stderr
    resolved = modelgate(team, uri, "resolve", "production", "--json")
    assert json.loads(resolved.stdout)["files"] == pin_digests(1), resolved.stderr


@pytest.mark.parametrize("tamper", ["baseline tag", "suite digest", "file digest", "legacy digest tag",
                                    "report artifact", "statement artifact"])
def test_a_valid_signature_over_a_record_changed_since_is_refused(team, mlflow_server, tmp_path, tamper):
    uri, model = mlflow_server, model_of(team)
    v1 = record_gate(team, uri, 1)
    assert approve(team, uri, v1).returncode == 0  # approved while the record was intact
    client = MlflowClient(tracking_uri=uri)
    mv = client.get_model_version(model, v1)
    if tamper == "baseline tag":  # the run's param and the signature tie it
        client.set_model_version_tag(model, v1, "modelgate.baseline_version", "7")
        needle = "baseline_version"
    elif tamper == "suite digest":  # the record's long values are the run's version.json (EDIT on the experiment)
        rewrite_record(uri, model, v1, digests={**version_record(uri, model, v1)["digests"], "suites": "0" * 64})
        needle = "digests (suites)"
    elif tamper == "file digest":  # what a rollback would fetch and check
        rewrite_record(uri, model, v1, files={**pin_digests(1), "model.safetensors": "0" * 64})
        needle = "file digests (model.safetensors)"
    elif tamper == "legacy digest tag":  # a version registered before version.json: its tags hold the record
        to_legacy_layout(uri, model, v1)
        client.set_model_version_tag(model, v1, "modelgate.digest.suites", "0" * 64)
        needle = "digests (signed {}"  # a legacy run has no digest params: the signed statement catches it
    elif tamper == "report artifact":  # a friendlier report replaces the one the gate wrote
        path = tmp_path / "report.json"
        doc = json.loads(open(client.download_artifacts(mv.run_id, "report.json")).read())
        doc["reasons"] = ["all good"]
        path.write_text(json.dumps(doc))
        client.log_artifact(mv.run_id, str(path))
        needle = "report_sha256"
    else:  # the signed statement edited (its verdict, which the tags also say): the signature breaks
        path = tmp_path / "signature" / "statement.json"
        path.parent.mkdir()
        stmt = json.loads(open(client.download_artifacts(mv.run_id, "signature/statement.json")).read())
        path.write_bytes(signing.canonical({**stmt, "baseline_version": "7"}))
        client.log_artifact(mv.run_id, str(path), artifact_path="signature")
        needle = "does not verify"
    refused(promote(team, uri, v1), needle)
    assert_nothing_moved(team, uri)


def test_a_key_outside_its_validity_window_is_refused(tmp_path, mlflow_server):
    team = make_team(tmp_path / "team", "sg-expired-key",
                     public_keys=[KEY.entry(not_before="2020-01-01", not_after="2021-01-01")])
    v1 = record_gate(team, mlflow_server, 1)
    refused(promote(team, mlflow_server, v1), "outside its validity window", "2021-01-01")
    set_keys(team, KEY.entry(not_before="2999-01-01"))  # not yet valid is no better
    refused(promote(team, mlflow_server, v1), "outside its validity window")
    assert_nothing_moved(team, mlflow_server)


def test_rotation_the_old_key_verifies_within_its_window_while_the_new_key_signs(tmp_path, mlflow_server):
    uri = mlflow_server
    old, new = SigningKey.new(), SigningKey.new()
    team = make_team(tmp_path / "team", "sg-rotation", public_keys=[old.entry(not_before="2020-01-01")])
    model = model_of(team)
    v1 = record_gate(team, uri, 1, key=old)
    today = dt.datetime.now(dt.UTC).date()
    # rotation, a reviewed change of release.yaml: the old key ends today, the new one starts today
    set_keys(team, old.entry(not_before="2020-01-01", not_after=today.isoformat()),
             new.entry(not_before=today.isoformat()))
    assert approve(team, uri, v1).returncode == 0
    proc = promote(team, uri, v1)
    assert proc.returncode == 0, proc.stderr  # signed by the old key inside its window: still valid
    v2 = record_gate(team, uri, 2, key=new)
    assert approve(team, uri, v2).returncode == 0
    assert promote(team, uri, v2).returncode == 0 and alias(uri, model, "production") == v2
    # the old key retired yesterday: what it signs now (a leaked old key) no longer verifies
    set_keys(team, old.entry(not_before="2020-01-01", not_after=(today - dt.timedelta(days=1)).isoformat()),
             new.entry(not_before=today.isoformat()))
    v3 = record_gate(team, uri, 3, key=old)
    refused(promote(team, uri, v3), "outside its validity window")
    assert alias(uri, model, "production") == v2


def test_an_advisory_gate_is_recorded_apart_registers_nothing_and_cannot_be_promoted(team, mlflow_server):
    uri, model = mlflow_server, model_of(team)
    run_id = record_gate(team, uri, 1, kind="advisory")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == f"modelgate/{model}/advisory"
    assert run.data.tags[signing.GATE_KIND_TAG] == "advisory" and run.data.params["gate_kind"] == "advisory"
    assert "signature/statement.json" not in [a.path for a in client.list_artifacts(run_id, "signature")]
    assert client.search_model_versions(f"name='{model}'") == []
    proc = promote(team, uri, "pinned")
    assert proc.returncode == 2 and "no gated version" in proc.stderr
    # a version forged from the advisory run (a credential that may register, tags copied): never promotable
    release = load_release(team)
    pin = release.candidate
    client.create_registered_model(model)
    for kind in ("advisory", "release"):  # the run's gate_kind param decides, whatever the tags claim
        tags = legacy_tags(pin, run_id, "passed", {}, "dev@example.com", gate_kind=kind)
        mv = client.create_model_version(model, source=pin.uri(), run_id=run_id, tags=tags)
        refused(promote(team, uri, mv.version), "recorded by an advisory gate")
    assert_nothing_moved(team, uri)


def test_an_advisory_gate_passes_when_nothing_is_shown_worse_where_a_release_gate_is_inconclusive(team,
                                                                                                 mlflow_server):
    """The pull request's rule: fail when clearly worse, otherwise pass saying what could have been missed. The
    same inconclusive stage gives the advisory gate a pass (exit 0, its record says why) and the release gate an
    inconclusive verdict (exit 4: not promotable)."""
    from pipeline.gate.verdict import ADVISORY_PASS

    uri, model = mlflow_server, model_of(team)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(record_gate(team, uri, 1, verdict=Status.INCONCLUSIVE, kind="advisory"))
    assert run.data.tags["modelgate.verdict"] == "passed" and run.data.tags[signing.GATE_KIND_TAG] == "advisory"
    report = json.loads(Path(client.download_artifacts(run.info.run_id, "report.json")).read_text())
    assert (report["verdict"], report["exit_code"]) == ("passed", 0)
    assert report["reasons"] == [ADVISORY_PASS, "format: stand-in stage inconclusive"]
    version = record_gate(team, uri, 2, verdict=Status.INCONCLUSIVE)
    mv = client.get_model_version(model, version)
    assert mv.tags["modelgate.verdict"] == "inconclusive"
    refused(promote(team, uri, version), "inconclusive")


def _leaky_stage(ctx):
    """A stage whose tool dumps its whole environment into a log file the run keeps and uploads."""
    log = ctx.run_dir / "tool.log"
    log.write_text("\n".join(f"{k}={v}" for k, v in os.environ.items()))
    return StageResult("format", Status.PASSED, metrics={"pass_rate": 0.9}, artifacts={"log": str(log)},
                       reasons=[f"signing key: {os.environ.get(signing.SIGNING_KEY_ENV, '')}"])


def test_the_private_key_never_reaches_the_run_the_version_or_the_report(team, mlflow_server, tmp_path,
                                                                         monkeypatch):
    uri, model = mlflow_server, model_of(team)
    key = SigningKey.new()
    set_keys(team, key.entry())
    set_candidate(team, 1)
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, key.pem)
    signer = signing.load_signer()  # from the environment, as the release workflow gives it
    assert signer is not None and signer.key_id == key.id
    body = "".join(line for line in key.pem.splitlines() if not line.startswith("-----"))
    # the key reaches a stage's reasons and (a careless caller) the author: a param, a tag and the report's header
    report = run_gate(load_release(team), home=tmp_path / "home", tracking_uri=uri, stages=(("format", _leaky_stage),),
                      signer=signer, author=f"ci-bot {body}")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(report.tracking.run_id)
    mv = client.get_model_version(model, report.tracking.model_version)
    assert run.data.params["author"] == "ci-bot ***" and run.data.tags["mlflow.user"] == "ci-bot ***"
    run_dir = Path(report.run_dir)
    texts = {"params": repr(run.data.params), "tags": repr(run.data.tags), "version": repr(mv.tags),
             "report": (run_dir / "report.json").read_text()}
    downloaded = client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts"))
    files = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert downloaded and any(p.name == "tool.log" for p in files) and any(p.name == "statement.json" for p in files)
    texts.update({str(p): p.read_text(errors="replace") for p in files})
    texts.update({str(p): p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file()})
    for where, text in texts.items():
        assert body not in text and body[-24:] not in text, f"the signing key leaked into {where}"
    assert "signing key: " in texts["report"] and "***" in texts["report"]  # the stage did try to write it
    assert approve(team, uri, mv.version).returncode == 0 and promote(team, uri, mv.version).returncode == 0


def test_a_rollback_to_a_version_never_in_production_must_be_signed_too(team, mlflow_server):
    """A version that was production may be rolled back to (it was released under the rules of its time); one
    that never was must verify like a promotion."""
    from tests.support.team import modelgate, released

    uri, model = mlflow_server, model_of(team)
    v1 = released(team, uri, 1)
    v2 = released(team, uri, 2)
    unsigned = record_gate(team, uri, 3, key=None)
    proc = modelgate(team, uri, "rollback", "--to", unsigned, "--actor", "alice", "--reason", "drill")
    refused(proc, "is unsigned")
    assert alias(uri, model, "production") == v2
    proc = modelgate(team, uri, "rollback", "--actor", "alice", "--reason", "drill")
    assert proc.returncode == 0, proc.stderr
    assert alias(uri, model, "production") == v1
