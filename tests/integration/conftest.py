"""Integration tests: real local servers (MLflow, a GitHub-like API) and real git, no vLLM.
Their fixtures (`mlflow_server`, `github_fake`) are in tests/support/fixtures.py."""
