#!/usr/bin/env bash
# Installs what is missing, builds zeromesh once, and runs a local mesh of N
# nodes (default 3) on 127.0.0.1, each its own process with its own ports and
# RocksDB data directory under .testnet/mesh/. Node 1 starts the cluster
# (--init) and the others join through it. Prints each node's peer id, p2p
# address and API URL; Ctrl-C stops every node cleanly. Run it again to
# restart the same mesh from its data; --clean starts from empty data.
#
# Ports: node i listens on p2p 7000+i and API 8764+i (node 1: 7001, 8765).
#
# usage: scripts/testnet.sh [N] [--clean]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"

node_count=3
clean=false
for argument in "$@"; do
    case "$argument" in
        --clean) clean=true ;;
        ''|*[!0-9]*) echo "usage: scripts/testnet.sh [N] [--clean]  (N: nodes, 1 to 32)" >&2; exit 2 ;;
        *) node_count="$argument" ;;
    esac
done
if [ "$node_count" -lt 1 ] || [ "$node_count" -gt 32 ]; then
    echo "testnet: N must be 1 to 32, not $node_count" >&2
    exit 2
fi

bash scripts/setup.sh
cargo build --locked -p zeromesh
binary="$CARGO_TARGET_DIR/debug/zeromesh"

mesh_dir=".testnet/mesh"
if [ "$clean" = true ]; then rm -rf "$mesh_dir"; fi
mkdir -p "$mesh_dir"
token_file="$mesh_dir/join-token"
admin_token_file="$mesh_dir/admin-token"

pids=()
stop_all() {
    trap - INT TERM EXIT
    if ((${#pids[@]} > 0)); then
        echo
        echo "testnet: stopping ${#pids[@]} nodes"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
}
trap stop_all INT TERM EXIT

# Waits up to 60 s for node $1's ready line; fails with its log if it exits.
wait_ready() {
    local index="$1" pid="$2" deadline=$((SECONDS + 60))
    until grep -q '^ready ' "$mesh_dir/node-$index/stdout" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "testnet: node $index exited; its log ($mesh_dir/node-$index/log):" >&2
            tail -n 20 "$mesh_dir/node-$index/log" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            echo "testnet: node $index was not ready within 60 s; see $mesh_dir/node-$index/log" >&2
            exit 1
        fi
        sleep 0.1
    done
}

field() { grep '^ready ' "$1" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }

bootstrap=""
for index in $(seq 1 "$node_count"); do
    dir="$mesh_dir/node-$index"
    mkdir -p "$dir"
    args=(run --data "$dir" --listen "/ip4/127.0.0.1/tcp/$((7000 + index))" --api "127.0.0.1:$((8764 + index))")
    if [ "$index" -eq 1 ]; then
        args+=(--init)
        # One node: the single-node mode (README, "Running nodes").
        if [ "$node_count" -eq 1 ]; then args+=(--voter-count 1); fi
    else
        args+=(--bootstrap "$bootstrap")
        if [ -f "$token_file" ]; then args+=(--join-token "$(cat "$token_file")"); fi
    fi
    : > "$dir/stdout"
    echo "testnet: starting node $index of $node_count"
    "$binary" "${args[@]}" > "$dir/stdout" 2> "$dir/log" &
    pids+=("$!")
    wait_ready "$index" "$!"
    if [ "$index" -eq 1 ]; then
        token="$(sed -n 's/^join_token=//p' "$dir/stdout")"
        if [ -n "$token" ]; then
            (umask 077; echo "$token" > "$token_file")
        fi
        # The first admin token is printed once, when the cluster is made.
        admin="$(sed -n 's/^admin_token=//p' "$dir/stdout")"
        if [ -n "$admin" ]; then
            (umask 077; echo "$admin" > "$admin_token_file")
        fi
        if [ -f "$admin_token_file" ]; then export ZEROMESH_TOKEN="$(cat "$admin_token_file")"; fi
        bootstrap="$(field "$dir/stdout" p2p)"
    fi
done

# Wait, with a progress bar, until every node is a member and the voters
# are promoted (up to the voter count).
if ! "$binary" status --node ws://127.0.0.1:8765 --wait-members "$node_count" --wait-timeout 60 > /dev/null; then
    echo "testnet: not every node joined within 60 s; logs are in $mesh_dir/node-*/log" >&2
fi

echo
printf '%-5s %-54s %-70s %s\n' node "peer id" "p2p address" "API"
for index in $(seq 1 "$node_count"); do
    stdout="$mesh_dir/node-$index/stdout"
    printf '%-5s %-54s %-70s %s\n' "$index" "$(field "$stdout" peer_id)" "$(field "$stdout" p2p)" "$(field "$stdout" api)"
done
echo
"$binary" status --node ws://127.0.0.1:8765 || true
echo
echo "admin token: $admin_token_file (the API needs a token: export ZEROMESH_TOKEN=\$(cat $admin_token_file))"
echo "try: ZEROMESH_TOKEN=\$(cat $admin_token_file) $binary memory put agent-7/notes/today \"met the client\" --node ws://127.0.0.1:8765"
echo "dashboard: http://127.0.0.1:8765/ui (paste the admin token; any node's API port serves it)"
echo "logs: $mesh_dir/node-*/log   stop: Ctrl-C"
wait "${pids[@]}"
