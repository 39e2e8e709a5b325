#!/usr/bin/env bash
# Set up .venv (idempotent) and run the whole test suite: unit tests, then the end-to-end tests on the real
# stack (vLLM on CPU, lm-eval, an MLflow server and git, all on 127.0.0.1). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest -ra --timeout=1800 "$@"
