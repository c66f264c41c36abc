#!/usr/bin/env bash
# Installs what is missing, then runs every test of the workspace: unit,
# property and integration tests, and each benchmark once as a smoke test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"
bash scripts/setup.sh
cargo test --workspace --all-targets --locked "$@"
