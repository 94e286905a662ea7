#!/usr/bin/env bash
# Sets up a fresh machine: a virtual environment with torch (CPU build unless a GPU is present),
# the bsns package and its dependencies, and the npm packages (compiler, OpenZeppelin, anvil, forge).
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
EXTRAS=dev
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  EXTRAS=dev,gpu  # the CUDA paths' tests (pytest -m gpu) need bitsandbytes for QLoRA
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ "$EXTRAS" = dev,gpu ]; then
    .venv/bin/pip install -q torch
  else
    # The CPU build: an unpinned torch would pull a multi-GB CUDA build (see docs/architecture.md).
    .venv/bin/pip install -q "torch==2.13.0" || .venv/bin/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
.venv/bin/pip install -q -e ".[$EXTRAS]"
if [ ! -x node_modules/.bin/anvil ] || [ ! -x node_modules/.bin/forge ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
# Slither (tests/contracts/test_slither.py) in its own environment: it pins web3 < 8, which the project's
# web3 8 cannot share. Created only when missing; the pinned version is the one the triage file was made with.
SLITHER_VERSION=0.11.3
if [ ! -x .venv-slither/bin/slither ]; then
  "$PY" -m venv .venv-slither
  .venv-slither/bin/pip install -q "slither-analyzer==$SLITHER_VERSION"
fi
