"""The signed gate statement: canonical bytes, what verification accepts, keys and their windows, keygen."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest

from pipeline.config.release import load_release
from pipeline.errors import BadInput, ConfigError, Refused
from pipeline.releasing import signing
from pipeline.report.document import GateReport
from tests.support import releases
from tests.support.reports import sample_document
from tests.support.signing import KEY, SigningKey


def keys(*entries):
    return signing.parse_public_keys(list(entries), "release.yaml")


def sample_report() -> GateReport:
    doc = sample_document(Path("/nonexistent"))
    doc["candidate"]["files"] = {"config.json": "a" * 64, "model.safetensors": "b" * 64}
    return GateReport.from_dict({**doc, "digests": {"suites": "c" * 64, "evalsets": "d" * 64},
                                 "baseline_version": "3", "config_digest": "e" * 64})


def signed_statement(key=KEY, **changes):
    stmt = signing.statement(sample_report(), run_id="r" * 32, report_sha256="f" * 64, key_id=key.id,
                             signed_at="2026-06-01T12:00:00+00:00")
    return {**stmt, **changes}


def test_canonical_bytes_are_stable_and_independent_of_key_order():
    stmt = signed_statement()
    again = json.loads(json.dumps(dict(reversed(list(stmt.items())))))
    assert signing.canonical(stmt) == signing.canonical(again)
    assert signing.canonical(stmt) == json.dumps(stmt, sort_keys=True, separators=(",", ":")).encode()
    assert b" " not in signing.canonical({"a": 1, "b": [1, 2]})


def test_the_statement_holds_what_the_gate_judged():
    report = sample_report()
    stmt = signed_statement()
    assert stmt["revision"] == report.candidate.revision and stmt["files"] == report.candidate.files
    assert stmt["digests"] == report.digests and stmt["verdict"] == str(report.verdict)
    assert stmt["exit_code"] == report.exit_code and stmt["gate_id"] == report.gate_id
    assert {"model_name", "repo", "source", "config_digest", "baseline_version", "report_sha256", "run_id",
            "key_id", "signed_at", "gate_kind", "repo_commit"} <= set(stmt)


def test_any_changed_field_breaks_verification():
    stmt = signed_statement()
    sig = KEY.signer().sign(stmt)
    trusted = keys(KEY.entry())
    assert signing.verify(stmt, sig, trusted, "v1").id == KEY.id
    for field, value in stmt.items():
        if field == "key_id":
            continue
        changed = {**stmt, field: {"x": "y"} if isinstance(value, dict) else f"{value}x"}
        with pytest.raises(Refused, match="does not verify"):
            signing.verify(changed, sig, trusted, "v1")
    with pytest.raises(Refused, match="does not verify"):
        signing.verify({**stmt, "extra": 1}, sig, trusted, "v1")


def test_unknown_key_no_keys_and_windows_are_refused():
    stmt = signed_statement()
    sig = KEY.signer().sign(stmt)
    with pytest.raises(Refused, match="no signing keys configured"):
        signing.verify(stmt, sig, (), "v1")
    other = SigningKey.new()
    with pytest.raises(Refused, match="not in signing.public_keys"):
        signing.verify(stmt, sig, keys(other.entry()), "v1")
    with pytest.raises(Refused, match="outside its validity window"):
        signing.verify(stmt, sig, keys(KEY.entry("2026-06-02")), "v1")
    with pytest.raises(Refused, match="outside its validity window"):
        signing.verify(stmt, sig, keys(KEY.entry("2020-01-01", "2026-05-31")), "v1")
    # a date is a whole day: a key ending on the day it signed still verifies that day
    assert signing.verify(stmt, sig, keys(KEY.entry("2026-06-01", "2026-06-01")), "v1")
    # another key's signature under this key's id
    forged = other.signer().sign(stmt)
    with pytest.raises(Refused, match="does not verify"):
        signing.verify(stmt, forged, keys(KEY.entry()), "v1")


def test_release_yaml_keys_are_checked(tmp_path):
    def write_release(data, **sections):
        return releases.write_release(tmp_path, data, **sections)

    entry = KEY.entry()
    release = load_release(write_release(None, signing={"public_keys": [entry]}))
    assert [k.id for k in release.signing_keys] == [KEY.id]
    assert release.advisory_experiment == "modelgate/support-bot/advisory"
    bad_id = {**entry, "id": "ed25519:" + "0" * 16}
    with pytest.raises(ConfigError, match="is not this key's id") as exc:
        load_release(write_release(None, signing={"public_keys": [bad_id]}))
    assert exc.value.path == "signing.public_keys[0].id"
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        load_release(write_release(None, signing={"public_keys": [{**entry, "public_key": "bm90IGEga2V5"}]}))
    with pytest.raises(ConfigError, match="not_after is before not_before"):
        load_release(write_release(None, signing={"public_keys": [KEY.entry("2026-01-02", "2026-01-01")]}))
    with pytest.raises(ConfigError, match="ISO 8601"):
        load_release(write_release(None, signing={"public_keys": [KEY.entry("soon")]}))


def test_keygen_writes_a_private_key_0600_and_refuses_to_overwrite(tmp_path, monkeypatch):
    path, entry = signing.generate(tmp_path / "key.pem")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    signer = signing.load_signer(path)
    assert signer is not None and signer.key_id == entry["id"]
    (parsed,) = keys(entry)
    stmt = {"signed_at": dt.datetime.now(dt.UTC).isoformat(), "key_id": entry["id"]}
    assert signing.verify(stmt, signer.sign(stmt), (parsed,), "x") == parsed
    with pytest.raises(BadInput, match="refusing to overwrite"):
        signing.generate(path)
    monkeypatch.delenv(signing.SIGNING_KEY_ENV, raising=False)
    assert signing.load_signer() is None
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, "-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----")
    with pytest.raises(BadInput, match="not an unencrypted PEM private key") as exc:
        signing.load_signer()
    assert "not-a-key" not in str(exc.value)


def test_keygen_command_prints_an_entry_release_yaml_accepts(tmp_path):
    import yaml

    from tests.support.cli import run_in_process

    proc = run_in_process("keygen", "--out", str(tmp_path / "key.pem"))
    assert proc.returncode == 0, proc.stderr
    (entry,) = yaml.safe_load(proc.stdout)
    (key,) = keys(entry)
    signer = signing.load_signer(tmp_path / "key.pem")
    assert signer is not None and key.id == signer.key_id == entry["id"]
    again = run_in_process("keygen", "--out", str(tmp_path / "key.pem"))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def test_keygen_audit_prints_an_audit_keys_entry_for_the_production_environment(tmp_path):
    import yaml

    from pipeline.config.release import load_release
    from tests.support.cli import run_in_process
    from tests.support.releases import write_release

    proc = run_in_process("keygen", "--audit", "--out", str(tmp_path / "audit.pem"))
    assert proc.returncode == 0, proc.stderr
    assert "signing.audit_keys" in proc.stdout and "MODELGATE_AUDIT_KEY" in proc.stderr and "production" in proc.stderr
    (entry,) = yaml.safe_load(proc.stdout)
    release = load_release(write_release(tmp_path, signing={"audit_keys": [entry]}))
    assert [k.id for k in release.audit_keys] == [entry["id"]] and release.signing_keys == ()


def test_an_audit_event_seal_covers_the_run_id_and_every_modelgate_tag():
    from pipeline.releasing import seal
    from tests.support.signing import AUDIT_KEY

    trusted = keys(AUDIT_KEY.entry())
    tags = {"modelgate.event": "approve", "modelgate.version": "3", "modelgate.actor": "alice",
            "mlflow.user": "alice"}
    sealed = {**tags, seal.SEAL_TAG: seal.seal("run1", tags, AUDIT_KEY.signer(), "2026-12-07T06:00:00+00:00")}
    assert seal.verify("run1", sealed, trusted) is None
    assert seal.verify("run1", {**sealed, "mlflow.user": "mallory"}, trusted) is None  # display tags: not facts
    assert "does not verify" in seal.verify("run2", sealed, trusted)  # copied onto another run
    assert "does not verify" in seal.verify("run1", {**sealed, "modelgate.version": "4"}, trusted)
    assert "does not verify" in seal.verify("run1", {**sealed, "modelgate.approvers": "bob"}, trusted)  # added
    assert "not in signing.audit_keys" in seal.verify("run1", sealed, keys(KEY.entry()))
    assert seal.verify("run1", tags, trusted) == "not sealed (written without the audit key)"
    assert "no audit keys configured" in seal.verify("run1", sealed, ())
    assert seal.verify("run1", {**sealed, seal.SEAL_TAG: "{"}, trusted) == "its seal is malformed"


def test_a_watch_scoped_audit_key_seals_only_rollbacks_by_modelgate_watch(tmp_path):
    """The production-watch environment's key (promotion.auto_rollback): its seal counts on a rollback by
    modelgate-watch and on nothing else, so that key cannot approve or promote."""
    from pipeline.releasing import seal

    watch_key = SigningKey.new()
    trusted = signing.parse_public_keys([{**watch_key.entry(), "scope": "watch"}], "release.yaml", "audit_keys")

    def sealed(event, actor):
        tags = {"modelgate.event": event, "modelgate.version": "3", "modelgate.actor": actor}
        return {**tags, seal.SEAL_TAG: seal.seal("run1", tags, watch_key.signer(), "2026-12-07T06:00:00+00:00")}

    assert seal.verify("run1", sealed("rollback", "modelgate-watch"), trusted) is None
    for event, actor in (("approve", "modelgate-watch"), ("promote", "modelgate-watch"), ("rollback", "alice"),
                         ("rollback-check", "modelgate-watch")):
        problem = seal.verify("run1", sealed(event, actor), trusted)
        assert problem == (f"sealed by {watch_key.id}, a watch key: it may seal only rollback by modelgate-watch, "
                           f"not {event} by {actor}"), problem
    # the same key unscoped seals anything; a scope on a gate key is bad input naming the entry
    assert seal.verify("run1", sealed("promote", "alice"), keys(watch_key.entry())) is None
    with pytest.raises(ConfigError, match="signing.public_keys\\[0\\].scope"):
        signing.parse_public_keys([{**watch_key.entry(), "scope": "watch"}], "release.yaml")
    release = load_release(releases.write_release(tmp_path, signing={"audit_keys": [
        {**watch_key.entry(), "scope": "watch"}]}))
    assert [k.scope for k in release.audit_keys] == ["watch"]


def test_the_servers_creation_time_dates_a_signature_not_the_signers_claim():
    stmt = signed_statement()  # claims 2026-06-01T12:00
    sig = KEY.signer().sign(stmt)
    retired = keys(KEY.entry(not_before="2026-01-01", not_after="2026-07-01"))
    created = dt.datetime(2026, 6, 1, 12, 0, 30, tzinfo=dt.UTC)
    assert signing.verify(stmt, sig, retired, "v1", server_time=created).id == KEY.id
    with pytest.raises(Refused, match="recorded by the tracking server at 2026-12-07T00:00:00.*outside the validity"):
        signing.verify(stmt, sig, retired, "v1", server_time=dt.datetime(2026, 12, 7, tzinfo=dt.UTC))
    open_key = keys(KEY.entry(not_before="2026-01-01"))
    with pytest.raises(Refused, match="within 24 h after its record, never before it"):  # backdated by days
        signing.verify(stmt, sig, open_key, "v1", server_time=dt.datetime(2026, 6, 5, tzinfo=dt.UTC))
    with pytest.raises(Refused, match="within 24 h after its record, never before it"):  # a record days older: replayed
        signing.verify(stmt, sig, open_key, "v1", server_time=dt.datetime(2026, 5, 29, tzinfo=dt.UTC))
    later = dt.datetime(2026, 6, 1, 11, 0, tzinfo=dt.UTC)  # signed an hour after the record (a resumed record)
    assert signing.verify(stmt, sig, open_key, "v1", server_time=later).id == KEY.id
