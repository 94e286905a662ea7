#!/usr/bin/env bash
# The `solc` forge runs (foundry.toml): the project's pinned npm compiler through scripts/solc_shim.js, so
# forge compiles offline with the same compiler as coordinator/compile.py (forge cannot download solc here).
exec node "$(dirname "$0")/solc_shim.js" "$@"
