#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (slow end-to-end suites included, at small size) on both
# cores; a module's tests stay on one worker, so its cluster is built once (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -n 2 --dist loadscope --durations=30 "$@"
