#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine with only Rust installed:
# installs what the tests need (SIPp from Debian's sip-tester), checks format and lints,
# builds sbcd, then runs the unit, state-machine and end-to-end suites.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

# SIPp drives the calls; curl and jq run the sems-sbc-* tools; dpkg-deb checks the package;
# the cluster tests start their own redis-server instances on loopback ports.
missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v sipp >/dev/null || { echo "SIPp is required (apt-get install sip-tester)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }
if ! cargo deb --version >/dev/null 2>&1; then
  step "installing cargo-deb (builds the Debian package)"
  cargo install --locked cargo-deb@3.8.0
fi

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "engine boundary: sbc-engine builds alone, without tokio, axum, clap or SQLite"
cargo check --locked -p sbc-engine
engine_deps=$(cargo tree --locked -p sbc-engine -e normal --prefix none | awk '{print $1}' | sort -u)
for banned in tokio axum clap rusqlite libsqlite3-sys hickory-resolver tracing-subscriber; do
  if grep -qx "$banned" <<<"$engine_deps"; then
    echo "sbc-engine depends on $banned (see sbc-core/engine/Cargo.toml)"
    cargo tree --locked -p sbc-engine -e normal -i "$banned"
    exit 1
  fi
done

step "build sbcd (release, used by the end-to-end tests)"
cargo build --release --locked -p sbc-core --bin sbcd
export SBCD_BIN="$PWD/target/release/sbcd"

step "tests"
cargo test --workspace --locked

step "Debian package"
./packaging/check-deb.sh

step "benchmark harness smoke (benches/load/run.sh with tiny steps; not a measurement)"
bench_out=$(mktemp)
bench_log=$(mktemp)
QUICK=1 RATES=1000 STEP_S=3 FIXED_S=3 HELD=200 HELD_RATE=200 SETTLE_S=1 MEDIA_STREAMS=100 MEDIA_S=2 TLS_RATES=100 TLS_S=2 \
  OUT="$bench_out" benches/load/run.sh >"$bench_log" 2>&1 || { echo "benches/load/run.sh failed"; tail -n 40 "$bench_log"; exit 1; }
for section in "## Signalling" "### Highest call rate" "### Memory per held call" "## Media" "## SIP over TLS"; do
  grep -q "^$section" "$bench_out" || { echo "benchmark report lacks '$section'"; cat "$bench_out"; tail -n 40 "$bench_log"; exit 1; }
done
rm -f "$bench_out" "$bench_log"

if cargo fuzz --version >/dev/null 2>&1; then
  step "fuzz smoke (30 s per target)"
  ./fuzz/smoke.sh 30
fi
