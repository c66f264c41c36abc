#!/usr/bin/env bash
# Runs this folder's Compose example as written and checks the mesh it
# starts: builds the image from deploy/docker/Dockerfile, brings the three
# nodes up with fresh tokens, waits until they are one cluster of three
# voters with a leader, writes a memory through node2 and reads it through
# node3, checks the containers run unprivileged on a read-only root,
# restarts the nodes one at a time (founder last) and reads the write through
# each after its restart, then takes the project down with its volumes.
#
# Uses `docker compose` where a Docker engine answers, else podman with
# podman-compose (set COMPOSE to choose: "docker compose" or
# "podman-compose"). The engine pulls rust:1.95-bookworm and
# debian:bookworm-slim unless it has them. The first build compiles RocksDB
# (47 minutes on two cores here); the engine's build cache keeps later ones
# short. APIs are published on 127.0.0.1:8765-8767, which must be free.
#
# usage: deploy/docker/check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ -n "${COMPOSE:-}" ]; then
    read -r -a compose <<<"$COMPOSE"
elif docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v podman >/dev/null 2>&1 && command -v podman-compose >/dev/null 2>&1; then
    compose=(podman-compose)
else
    echo "check: needs a Docker engine with 'docker compose', or podman with podman-compose" >&2
    exit 1
fi
engine="${compose[0]%-compose}"
project=zeromesh-check
compose+=(-p "$project" -f compose.yaml)

for port in 8765 8766 8767; do
    if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "check: 127.0.0.1:$port is taken (a testnet?); stop what listens there first" >&2
        exit 1
    fi
done

say() { printf '\ncheck: %s\n' "$*"; }
# The zeromesh CLI, from the image itself, on the host's network.
cli() { "$engine" run --rm --network host -e ZEROMESH_TOKEN="$ZEROMESH_ADMIN_TOKEN" zeromesh:local "$@"; }
cleanup() {
    status=$?
    if [ "$status" -ne 0 ]; then
        say "failed; the nodes' last log lines:"
        for node in node1 node2 node3; do "${compose[@]}" logs --tail 20 "$node" 2>&1 || true; done
    fi
    say "taking the project down with its volumes"
    "${compose[@]}" down -v >/dev/null 2>&1 || true
    exit "$status"
}

say "building the image with $engine"
"$engine" build -f Dockerfile -t zeromesh:local ../..
ZEROMESH_JOIN_TOKEN="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
ZEROMESH_ADMIN_TOKEN="$("$engine" run --rm zeromesh:local token generate)"
export ZEROMESH_JOIN_TOKEN ZEROMESH_ADMIN_TOKEN
trap cleanup EXIT

say "starting node1, node2 and node3"
"${compose[@]}" up -d --build
cli status --node ws://127.0.0.1:8765 --wait-members 3 --wait-timeout 120

value="written through node2 at $(date -u +%FT%TZ)"
cli memory put check/compose "$value" --node ws://127.0.0.1:8766
read_back="$(cli memory get check/compose --node ws://127.0.0.1:8767)"
if [[ "$read_back" != *"$value"* ]]; then
    echo "check: node3 read '$read_back', not '$value'" >&2
    exit 1
fi
say "node3 reads what node2 wrote"

for node in node1 node2 node3; do
    who="$("${compose[@]}" exec -T "$node" sh -c 'id -u; touch /zeromesh-check 2>/dev/null && echo writable || echo read-only')"
    if [ "$(echo "$who" | tr '\n' ' ')" != "10001 read-only " ]; then
        echo "check: $node runs as '$who' (want uid 10001 on a read-only root)" >&2
        exit 1
    fi
done
say "each node runs as uid 10001 on a read-only root"

# A rolling restart, founder last: each node comes back on its own volume
# (it says so: --init is ignored on node1), rejoins by its service name and
# reads the write through its own API.
for node in node3 node2 node1; do
    port=$((8764 + ${node#node}))
    say "restarting $node"
    "${compose[@]}" restart "$node"
    cli status --node "ws://127.0.0.1:$port" --wait-members 3 --wait-timeout 120
    read_back="$(cli memory get check/compose --node "ws://127.0.0.1:$port")"
    if [[ "$read_back" != *"$value"* ]]; then
        echo "check: $node read '$read_back' after its restart, not '$value'" >&2
        exit 1
    fi
done
if ! "${compose[@]}" logs node1 2>&1 | grep -q "already belongs to a cluster; --init is ignored"; then
    echo "check: node1 did not come back on its data (no 'already belongs to a cluster' in its log)" >&2
    exit 1
fi
say "ok: the Compose mesh formed, replicated a write and kept it through a rolling restart"
