# Shared settings for the scripts; sourced, not run.
# The build directory lives outside the checkout so that a fresh clone on the
# same machine reuses dependencies already built (RocksDB's C++ takes ~15 min).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/zeromesh/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
# RocksDB's build script compiles its C++ again whenever CXX's value changes,
# and .cargo/config.toml names this checkout's scripts/clang++: every clone at
# another path (CI's fresh one included) would recompile it into the shared
# build directory, and the next build here again. The scripts name one copy
# of the wrapper, in the cache, for every checkout. A CXX already set wins.
if [[ -z "${CXX:-}" ]]; then
    ZEROMESH_CXX_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/zeromesh/cxx"
    mkdir -p "$ZEROMESH_CXX_DIR"
    for zeromesh_cxx_file in clang++ rocksdb-pch.h; do
        if ! cmp -s "$REPO_ROOT/scripts/$zeromesh_cxx_file" "$ZEROMESH_CXX_DIR/$zeromesh_cxx_file"; then
            cp "$REPO_ROOT/scripts/$zeromesh_cxx_file" "$ZEROMESH_CXX_DIR/$zeromesh_cxx_file.$$"
            mv -f "$ZEROMESH_CXX_DIR/$zeromesh_cxx_file.$$" "$ZEROMESH_CXX_DIR/$zeromesh_cxx_file"
        fi
    done
    export CXX="$ZEROMESH_CXX_DIR/clang++"
    unset ZEROMESH_CXX_DIR zeromesh_cxx_file
fi
