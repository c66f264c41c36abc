#!/usr/bin/env bash
# Runs the nemesis: a local mesh under concurrent clients while faults are
# injected (kill -9, restarts on the same or new ports, SIGSTOP, isolation,
# two at once), then every node killed and restarted and the whole history
# checked: linearizable, no acknowledged write lost, agreement usage exact
# and within its limit, every node back and in agreement. Prints a summary,
# saves the history and node logs, and exits non-zero on any violation.
#
#   scripts/nemesis.sh [--rounds N] [--nodes 5] [--clients 6] [--seed S] [--out DIR]
#
# Installs what is missing and builds first, like scripts/testnet.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"
bash scripts/setup.sh
cargo build --locked -p zeromesh -p zeromesh-testnet --bin zeromesh --bin nemesis
exec "$CARGO_TARGET_DIR/debug/nemesis" "$@"
