#!/usr/bin/env bash
# Set up .venv with the test tools (idempotent), lint (ruff) and type-check (mypy) the code, then run the whole
# test suite: unit tests, integration tests, then the end-to-end tests on the real stack (vLLM on CPU, lm-eval,
# an MLflow server and git, all on 127.0.0.1). With arguments, pytest runs just those (e.g. a test file, -k EXPR).
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
PYTEST=(.venv/bin/python -m pytest -ra --timeout=1800 --durations=30)
if [ $# -gt 0 ]; then  # the tests asked for, in one process
  exec "${PYTEST[@]}" --shuffle "$seed" "$@"
fi
# The whole suite in two runs. Unit and integration tests on two workers (pytest-xdist), a test module's tests
# together on one worker (--dist loadfile: module fixtures set up once); their servers and processes are each
# worker's own (tests/support/processes.py lists only its session's). Then the e2e tests alone, one after the
# other: each boots vLLM, whose worker is bound to one core. Both runs always run; the exit code is the first
# failing one's.
rc=0
"${PYTEST[@]}" --shuffle "$seed" -n 2 --dist loadfile tests/unit tests/integration || rc=$?
"${PYTEST[@]}" tests/e2e || { code=$?; [ "$rc" -ne 0 ] || rc=$code; }
exit "$rc"
