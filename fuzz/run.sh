#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 60), from fresh seeds.
#   cargo install cargo-fuzz --locked   # once
#   fuzz/run.sh 300
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
cargo run --quiet --release --example make_seeds -- corpus
for target in frame_codec json_lines hello handshake payload_roundtrip; do
    echo "== $target for ${seconds}s"
    cargo fuzz run --sanitizer none "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 |
        grep -E "^#[0-9]+.*DONE|^Done|ERROR|panicked|SUMMARY|crash-" || true
done
