#!/usr/bin/env bash
# Installs what building zeromesh needs and is missing: Debian packages for
# RocksDB's bundled C++ build (clang, libclang-dev for bindgen), lld for the
# C example plugins (wasm32), Python's venv and Node for the MCP client
# tests, iproute2 and iptables for the partition tests and the nemesis
# (network namespaces, packets dropped in the kernel), chromium for the
# dashboard's browser test, promtool and
# python3-yaml for the deployment examples' tests, and a Rust toolchain check.
# Safe to run again: it installs only what is absent.
# Extra Debian packages may be named as arguments (bench.sh adds etcd's).
#
# usage: scripts/setup.sh [extra Debian package...]
set -euo pipefail

packages=(clang libclang-dev lld build-essential pkg-config iproute2 iptables chromium python3-yaml "$@")
# The MCP client interoperability tests need Python's venv and Node with npm;
# a machine that already has them (any install) is left alone.
if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then packages+=(python3-venv); fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then packages+=(nodejs npm); fi
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The oldest Rust that builds zeromesh is the workspace's rust-version (the
# newest any locked dependency declares).
rust_needed="$(sed -nE 's/^rust-version = "([0-9.]+)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml")"
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is not installed; install Rust $rust_needed or newer (https://rustup.rs) and run again" >&2
    exit 1
fi
rust_minor="$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')"
if [ "$rust_minor" -lt "$(echo "$rust_needed" | cut -d. -f2)" ]; then
    echo "setup: $(rustc --version) is too old; zeromesh needs Rust $rust_needed or newer" >&2
    exit 1
fi

# promtool, which tests the Prometheus alert rules in deploy/prometheus: taken
# out of Debian's prometheus package rather than installing it, which would
# start a Prometheus server.
promtool="${XDG_CACHE_HOME:-$HOME/.cache}/zeromesh/tools/promtool"
if [ ! -x "$promtool" ] && ! command -v promtool >/dev/null 2>&1; then
    echo "setup: fetching promtool from Debian's prometheus package"
    download="$(mktemp -d)"
    if ! (cd "$download" && apt-get download -qq prometheus 2>/dev/null); then
        sudo_cmd=()
        if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
        "${sudo_cmd[@]}" apt-get update -qq
        (cd "$download" && apt-get download -qq prometheus 2>/dev/null)
    fi
    dpkg-deb -x "$download"/prometheus_*.deb "$download/unpacked"
    mkdir -p "$(dirname "$promtool")"
    install -m 0755 "$download/unpacked/usr/bin/promtool" "$promtool"
    rm -rf "$download"
fi
