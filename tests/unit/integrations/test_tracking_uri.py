"""Which MLflow store a command works on: --tracking-uri, then $MLFLOW_TRACKING_URI, then release.yaml's
tracking.uri (or the store a kept report recorded), then the embedded default beside release.yaml."""

from pathlib import Path

import pytest

from pipeline.errors import BadInput
from pipeline.integrations.tracking import default_uri, resolve_uri


def test_override_wins_over_environment_and_config(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_uri("http://flag:5000", configured="http://yaml:5000", root=Path(".")) == "http://flag:5000"


def test_environment_wins_over_config(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_uri(None, configured="http://yaml:5000", root=Path(".")) == "http://env:5000"


def test_configured_then_embedded_default(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(None, configured="http://yaml:5000", root=tmp_path) == "http://yaml:5000"
    assert resolve_uri(None, configured=None, root=tmp_path) == default_uri(tmp_path)


def test_no_store_named_and_no_default_is_bad_input(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(BadInput, match="--tracking-uri"):
        resolve_uri(None, configured=None, root=None)
