"""Secret redaction's edges: the minimum length, the size cap, unreadable files, nothing registered."""

from __future__ import annotations

import pytest

from pipeline.util import secrets

SECRET = "s3cr3t-" + "k" * 24


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Each test starts with no registered secret and none in the environment, and leaves the registry as it
    found it."""
    monkeypatch.setattr(secrets, "_extra_values", set())
    monkeypatch.setattr(secrets, "_extra_names", set())
    for name in secrets.secret_names():
        monkeypatch.delenv(name, raising=False)


def test_a_value_shorter_than_the_minimum_is_not_a_secret(tmp_path):
    short = "x" * (secrets.MIN_SECRET_LEN - 1)
    secrets.register_secret_value(short)
    secrets.register_secret_value(None)
    assert secrets.secret_values() == []
    assert secrets.redact(f"key={short}") == f"key={short}"
    secrets.register_secret_value(SECRET)
    assert secrets.secret_values() == [SECRET] and secrets.redact(f"key={SECRET}") == "key=***"


def test_secret_env_names_from_release_yaml_are_redacted(monkeypatch):
    monkeypatch.setenv("SUPPORT_DB_PASSWORD", SECRET)
    assert secrets.redact(SECRET) == SECRET  # not named yet
    secrets.register_secret_env(["SUPPORT_DB_PASSWORD"])
    assert secrets.redact(f"pw {SECRET}.") == "pw ***."
    assert "SUPPORT_DB_PASSWORD" not in secrets.child_env({"SUPPORT_DB_PASSWORD": SECRET, "PATH": "/bin"})


def test_nothing_registered_rewrites_nothing(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text(f"nothing secret here {SECRET}")
    assert secrets.redact_file(path) is False and secrets.redact_tree(tmp_path) == []
    assert path.read_text() == f"nothing secret here {SECRET}"


def test_files_over_the_size_cap_are_not_scanned(tmp_path, monkeypatch):
    secrets.register_secret_value(SECRET)
    big, small = tmp_path / "big.log", tmp_path / "small.log"
    big.write_text("a" * 64 + SECRET)
    small.write_text(SECRET)
    monkeypatch.setattr(secrets, "REDACT_MAX_BYTES", 32)
    assert secrets.redact_tree(tmp_path) == [small]
    assert SECRET in big.read_text() and small.read_text() == "***"


def test_an_unreadable_path_is_skipped_not_an_error(tmp_path):
    secrets.register_secret_value(SECRET)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    assert secrets.redact_file(directory) is False
    assert secrets.redact_file(tmp_path / "missing") is False
