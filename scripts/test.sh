#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (slow end-to-end suites included, at small size) on both
# cores: the end-to-end tests one after another on one worker, everything else on the other (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
