#!/usr/bin/env bash
# Fuzzes every decoder of outside input (mesh and offload messages, adverts, snapshot
# and backup files, plugin packages, configuration files, agent exports, API
# requests) with libFuzzer, each for the given time, and stops non-zero when
# one crashes, hangs or runs out of memory, naming the input that did it.
#
#   scripts/fuzz.sh [--time SECONDS] [--jobs N] [target...]
#
# --time: seconds per target (default 600); --jobs: targets fuzzed at once
# (default 1; one core each); targets: default all (fuzz/README.md lists
# them). Each target's corpus grows across runs in the build cache, starting
# from the seeds in fuzz/seeds. Needs the nightly toolchain; installs
# cargo-fuzz into the build cache when missing. The first build compiles the
# node's whole dependency tree with coverage instrumentation (RocksDB's C++
# included): about 20 minutes on 2 cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"

seconds=600
jobs=1
targets=()
while (($# > 0)); do
    case "$1" in
    --time) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || { echo "fuzz: --time takes a number of seconds" >&2; exit 2; }
[[ "$jobs" =~ ^[0-9]+$ && "$jobs" -gt 0 ]] || { echo "fuzz: --jobs takes a positive number" >&2; exit 2; }
all=($(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^zeromesh-fuzz$'))
if ((${#targets[@]} == 0)); then targets=("${all[@]}"); fi
for target in "${targets[@]}"; do
    [[ " ${all[*]} " == *" $target "* ]] || { echo "fuzz: no target $target; targets: ${all[*]}" >&2; exit 2; }
done

bash scripts/setup.sh
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: installing the nightly toolchain (libFuzzer's instrumentation needs it)"
    rustup toolchain install nightly --profile minimal
fi
cache="$(dirname "$CARGO_TARGET_DIR")"
tools="$cache/tools"
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz into $tools"
    CARGO_TARGET_DIR="$cache/tools-build" cargo install --locked cargo-fuzz --version 0.13.2 --root "$tools"
fi

# No sanitizer: the decoders are safe Rust (the workspace has no `unsafe`),
# so what there is to find is a panic, a hang or an allocation past the
# limits, and libFuzzer catches those without one.
fuzz_target_dir="$cache/fuzz-target"
echo "fuzz: building the targets (log: $cache/fuzz-build.log)"
if ! cargo +nightly fuzz build --sanitizer none --target-dir "$fuzz_target_dir" >"$cache/fuzz-build.log" 2>&1; then
    grep -v '^\s*Compiling ' "$cache/fuzz-build.log" | tail -40 >&2
    echo "fuzz: building the targets failed" >&2
    exit 1
fi

results="$cache/fuzz-results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$results"
run_target() {
    local target="$1"
    local corpus="$cache/fuzz-corpus/$target" artifacts="$results/$target/"
    mkdir -p "$corpus" "$artifacts"
    # The seeds are read, not written: new inputs go to the cached corpus.
    "$fuzz_target_dir/x86_64-unknown-linux-gnu/release/$target" "$corpus" "fuzz/seeds/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=16384 \
        -artifact_prefix="$artifacts" -print_final_stats=1 >"$results/$target.log" 2>&1
}

echo "fuzz: ${#targets[@]} target(s), $seconds s each, $jobs at a time; logs and findings in $results"
failed=()
pending=("${targets[@]}")
declare -A running=()
while ((${#pending[@]} > 0 || ${#running[@]} > 0)); do
    while ((${#pending[@]} > 0 && ${#running[@]} < jobs)); do
        target="${pending[0]}"
        pending=("${pending[@]:1}")
        run_target "$target" &
        running[$!]="$target"
    done
    wait -n -p finished "${!running[@]}" && status=0 || status=$?
    target="${running[$finished]}"
    unset "running[$finished]"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$results/$target.log" | tail -1)"
    corpus_size="$(ls "$cache/fuzz-corpus/$target" | wc -l)"
    if ((status == 0)); then
        echo "fuzz: $target: no crash in ${runs:-?} runs; corpus $corpus_size inputs"
    else
        failed+=("$target")
        found="$(ls "$results/$target/" 2>/dev/null | head -1)"
        echo "fuzz: $target: FAILED after ${runs:-?} runs (exit $status); input: $results/$target/$found" >&2
        grep -m1 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$results/$target.log" >&2 || true
        echo "  replay: $fuzz_target_dir/x86_64-unknown-linux-gnu/release/$target $results/$target/$found" >&2
        echo "  then fix it and keep the input in fuzz/regressions/$target/ (node/tests/fuzz_inputs.rs replays it)" >&2
    fi
done
if ((${#failed[@]} > 0)); then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: every target ran $seconds s without a crash"
