#!/usr/bin/env bash
# Installs what is missing, then runs every test of the workspace: unit,
# property and integration tests under cargo-nextest (each test in its own
# process, test binaries side by side; .config/nextest.toml makes the tests
# that start meshes of node processes take turns), then each benchmark once
# as a smoke test, then checks that scripts/testnet.sh's build of the node
# would rebuild nothing. Arguments go to nextest (a filter, `--no-capture`).
# Ends with one line totalling the tests. Every run leaves cargo's build
# timings in $CARGO_TARGET_DIR/cargo-timings/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"
bash scripts/setup.sh
source scripts/mcp-clients.sh
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "test: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo nextest run --workspace --lib --bins --tests --locked --timings "$@" 2>&1 | tee "$log" || status=$?
# Criterion runs each benchmark once under --test; the mesh benchmark does a short pass.
cargo test --workspace --bench '*' --locked 2>&1 | tee -a "$log" || status=$?

# scripts/testnet.sh builds only the node (`cargo build -p zeromesh`). Its
# dependencies must resolve to the same features as this build's, or each
# script would rebuild the other's crates.
rebuilt="$(cargo build --locked -p zeromesh --message-format=json 2>/dev/null |
    grep '"reason":"compiler-artifact"' | grep '"fresh":false' |
    sed -E 's/.*"target":\{[^}]*"name":"([^"]*)".*/\1/' | sort -u | tr '\n' ' ' || true)"
if [ -n "$rebuilt" ]; then
    echo "test: FAILED: scripts/testnet.sh would rebuild: $rebuilt(its dependencies resolve to other features than the test build's)"
    echo "test result: FAILED. 0 passed; 1 failed" >> "$log"
    status=1
fi

awk '/^ *Summary \[/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) passed += $i; if ($(i+1) ~ /^(failed|timed)/) failed += $i } }
     /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) passed += $i; if ($(i+1) ~ /^failed/) failed += $i } }
     END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
