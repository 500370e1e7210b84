#!/usr/bin/env bash
# Runs the decoder fuzz target for a bounded time (default 60 s), growing fuzz/corpus/decode.
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz wants a nightly compiler for its
# sanitizer flags; RUSTC_BOOTSTRAP=1 lets the stable compiler accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
RUSTC_BOOTSTRAP=1 cargo fuzz run decode fuzz/corpus/decode -- -max_total_time="$seconds" -max_len=8192
