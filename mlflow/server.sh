#!/usr/bin/env bash
# Run a team MLflow tracking server on the embedded sqlite store of this repository.
#   mlflow/server.sh [PORT]          (default 5000, loopback only)
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:PORT before `modelgate gate`.
# For a shared server, see mlflow/README.md (PostgreSQL + object store).
set -euo pipefail
cd "$(dirname "$0")"
PORT=${1:-5000}
exec ../.venv/bin/mlflow server --host 127.0.0.1 --port "$PORT" --workers 1 \
  --backend-store-uri "sqlite:///$PWD/mlflow.db" --artifacts-destination "$PWD/artifacts"
