"""Integration tests: real local servers (MLflow, a GitHub-like API) and real git, no vLLM."""

from tests.e2e.conftest import mlflow_server  # noqa: F401  (a real `mlflow server` on loopback, per session)
