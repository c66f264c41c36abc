#!/usr/bin/env bash
# Runs the benchmarks (criterion) and prints their results. Results are
# recorded by hand in BENCHMARKS.md with the command that produced them.
#
# usage: scripts/bench.sh [criterion filter]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"
bash scripts/setup.sh
cargo bench --locked --workspace -- "$@"
