"""Shared fixtures: a real MLflow server per session, the fake GitHub, release.yaml writers. The end-to-end
fixtures (demo hub, vLLM process checks) live in tests/e2e/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.ghfake.fixtures import github_fake, github_fake_server  # noqa: F401  (fake GitHub REST API)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (sqlite backend, proxied artifacts) on 127.0.0.1, one per session."""
    from tests.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server.uri
    server.stop()

VALID_RELEASE = {
    "schema_version": 1,
    "model": {"name": "support-bot"},
    "candidate": {
        "source": "git",
        "repo": "hub/model",
        "revision": "0123456789abcdef0123456789abcdef01234567",
        "files": {"config.json": "a" * 64, "model.safetensors": "b" * 64},
    },
    "serving": {"dtype": "bfloat16", "max_model_len": 1024, "enforce_eager": True},
}


@pytest.fixture
def write_release(tmp_path):
    """write_release(data or text) -> path of a release.yaml in a fresh directory."""

    def write(data, name="release.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path

    return write
