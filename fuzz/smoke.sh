#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 30) from the committed corpus; a crash fails.
# Needs cargo-fuzz (cargo install cargo-fuzz). On a stable toolchain RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz use the sanitizer flags it needs.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
export RUSTC_BOOTSTRAP=1
for t in sip_framer sip_message engine_events; do
  mkdir -p "corpus/$t"
  echo "fuzz $t for ${secs}s"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=8192 -seed_inputs=@seeds.txt 2>&1 | tail -3
done
