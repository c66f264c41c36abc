# Shared settings for the scripts; sourced, not run.
# The build directory lives outside the checkout so that a fresh clone on the
# same machine reuses dependencies already built (RocksDB's C++ takes ~15 min).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/zeromesh/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
