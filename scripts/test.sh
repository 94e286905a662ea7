#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (slow end-to-end suites included, at small size) on both
# cores; a module's tests stay on one worker, so its cluster is built once, and modules start longest first
# (tests/conftest.py; --no-loadscope-reorder keeps that order: xdist would otherwise start the modules with the most
# tests first, which left two end-to-end clusters running alone at the end); the 30 slowest tests are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -n 2 --dist loadscope --no-loadscope-reorder --durations=30 "$@"
