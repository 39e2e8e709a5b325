#!/usr/bin/env bash
# Set up .venv with the test tools (idempotent), lint (ruff) and type-check (mypy) the code, then run the whole
# test suite: unit tests, integration tests, then the end-to-end tests on the real stack (vLLM on CPU, lm-eval,
# an MLflow server and git, all on 127.0.0.1). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test.sh
echo "lint: ruff"
.venv/bin/ruff check .
echo "types: mypy"
.venv/bin/mypy
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
# unit and integration tests run in a random order (tests/support/shuffle.py); the seed is printed in pytest's
# header: MODELGATE_TEST_SEED=<seed> scripts/test.sh reproduces an order
seed="${MODELGATE_TEST_SEED:-$(( RANDOM * 32768 + RANDOM ))}"
exec .venv/bin/python -m pytest -ra --timeout=1800 --durations=30 --shuffle "$seed" "$@"
