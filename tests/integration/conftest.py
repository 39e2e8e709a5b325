"""Integration tests: real local servers (MLflow, a GitHub-like API) and real git, no vLLM.
The `mlflow_server` fixture lives in tests/conftest.py (one server per session)."""
