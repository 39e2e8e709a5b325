#!/usr/bin/env bash
# Branch coverage (coverage.py, --branch) of the safety-critical modules from the unit and integration tests:
# the model cache and fetch, the statistics, the compare stage, the release policy, the promotion claim and the
# secret redaction. Prints coverage.py's report (statements and branches; `Cover` counts both, `BrPart` the
# branches taken one way only). Not part of scripts/test.sh: it re-runs the unit and integration tests (~10 min).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test.sh >/dev/null
MODULES="pipeline/model/fetch.py,pipeline/checks/stats.py,pipeline/gate/stages/compare.py,pipeline/releasing/policy.py,pipeline/releasing/claim.py,pipeline/util/secrets.py"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 COVERAGE_FILE=.coverage.safety
.venv/bin/python -m coverage erase
.venv/bin/python -m coverage run --branch --include="$MODULES" -m pytest -q -p no:cacheprovider tests/unit tests/integration "$@"
.venv/bin/python -m coverage report --show-missing
