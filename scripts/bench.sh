#!/usr/bin/env bash
# Runs the benchmarks (criterion, and the mesh benchmark on real node
# processes) in release builds and prints their results. Results are
# recorded by hand in BENCHMARKS.md with the command that produced them.
#
# The mesh benchmark runs the same write load against a 3-member etcd when
# built with the `etcd` feature: this script installs Debian's etcd-server
# and protobuf-compiler (which etcd's client needs to build) for that.
#
# The mesh benchmark also measures the peer API layer against a baseline
# node built from ZEROMESH_BASELINE_COMMIT (default: the last commit before
# the API moved to rmcp), in a worktree beside the cache, sharing the build
# directory so that only the workspace's own crates are compiled again.
#
# The federation part calls an MCP server written with the Python SDK:
# scripts/mcp-clients.sh installs it.
#
# usage: scripts/bench.sh [filter]   (a criterion filter, `mesh`,
#        `mesh-api` for the API layer comparison alone, `mesh-trace` for
#        writes against ZEROMESH_BASELINE_COMMIT=<commit before the trace>,
#        `mesh-etcd` for writes and reads on the leader and a follower
#        against etcd's writes (each right after ours; CPU per write too), `mesh-scale` for testnets of 3, 10 and
#        30 nodes, `mesh-tools` for plugin calls offloaded and federated servers, or
#        `soak`: ZEROMESH_SOAK_MINUTES (10) of mixed load, memory per minute)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"
bash scripts/setup.sh etcd-server protobuf-compiler
source scripts/mcp-clients.sh
features=(--features zeromesh-testnet/etcd)
# Only the full mesh run and the API and trace comparisons need the baseline.
if [[ "${1:-}" == mesh || "${1:-}" == mesh-api || "${1:-}" == mesh-trace ]]; then
    baseline_commit="${ZEROMESH_BASELINE_COMMIT:-c4fb570}"
    baseline_dir="${XDG_CACHE_HOME:-$HOME/.cache}/zeromesh/baseline-$baseline_commit"
    if [ ! -x "$baseline_dir/zeromesh" ]; then
        echo "bench: building the baseline node ($baseline_commit)"
        rm -rf "$baseline_dir"
        git worktree prune
        git worktree add --detach "$baseline_dir/src" "$baseline_commit"
        # The same invocation as below, so that dependencies resolve to the
        # same features and their release builds are shared, RocksDB's above all.
        (cd "$baseline_dir/src" && cargo build --release --locked --workspace --bins --benches "${features[@]}")
        cp "$CARGO_TARGET_DIR/release/zeromesh" "$baseline_dir/zeromesh"
        git worktree remove --force "$baseline_dir/src"
    fi
    export ZEROMESH_BASELINE_BIN="$baseline_dir/zeromesh"
fi
# The mesh benchmark starts the release node binary: build it with the
# benches, in one invocation so both share one feature resolution.
cargo build --release --locked --workspace --bins --benches "${features[@]}"
cargo bench --locked --workspace "${features[@]}" -- "$@"
