#!/usr/bin/env bash
# Runs the benchmarks (criterion, and the mesh benchmark on real node
# processes) in release builds and prints their results. Results are
# recorded by hand in BENCHMARKS.md with the command that produced them.
#
# The mesh benchmark runs the same write load against a 3-member etcd when
# built with the `etcd` feature: this script installs Debian's etcd-server
# and protobuf-compiler (which etcd's client needs to build) for that.
#
# usage: scripts/bench.sh [filter]   (a criterion filter, or `mesh`)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"
bash scripts/setup.sh etcd-server protobuf-compiler
features=(--features zeromesh-testnet/etcd)
# The mesh benchmark starts the release node binary: build it with the
# benches, in one invocation so both share one feature resolution.
cargo build --release --locked --workspace --bins --benches "${features[@]}"
cargo bench --locked --workspace "${features[@]}" -- "$@"
