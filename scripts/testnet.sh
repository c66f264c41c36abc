#!/usr/bin/env bash
# Installs what is missing, builds zeromesh, and runs a local cluster of N
# members (default 3) with embedded RocksDB under .testnet/.
#
# Until the libp2p mesh lands, the members run inside one process joined by
# the in-process transport: `zeromesh demo` elects a leader, writes memories,
# crashes the leader and restarts it from its directory, and prints what it
# did. Run it again to see the data recovered; --clean starts from empty data.
#
# usage: scripts/testnet.sh [N] [--clean]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"

node_count=3
clean=()
for argument in "$@"; do
    case "$argument" in
        --clean) clean=(--clean) ;;
        ''|*[!0-9]*) echo "usage: scripts/testnet.sh [N] [--clean]  (N: members, 1 to 7)" >&2; exit 2 ;;
        *) node_count="$argument" ;;
    esac
done
if [ "$node_count" -lt 1 ] || [ "$node_count" -gt 7 ]; then
    echo "testnet: N must be 1 to 7, not $node_count" >&2
    exit 2
fi

bash scripts/setup.sh
cargo build --locked -p zeromesh
mkdir -p .testnet
"$CARGO_TARGET_DIR/debug/zeromesh" demo --data .testnet/demo --nodes "$node_count" "${clean[@]}"
