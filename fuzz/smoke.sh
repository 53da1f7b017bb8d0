#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 30) from the committed corpus; a crash fails.
# Needs cargo-fuzz (cargo install cargo-fuzz). On a stable toolchain RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz use the sanitizer flags it needs.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
export RUSTC_BOOTSTRAP=1
for t in sip_framer sip_message engine_events profile_inputs sdp_media; do
  mkdir -p "corpus/$t"
  # The committed corpus (minimized after the last long run), unpacked beside what is there.
  if [ -f "corpus-min/$t.tar.xz" ]; then tar -xJf "corpus-min/$t.tar.xz" -C "corpus/$t" --skip-old-files; fi
  # Seed with the RFC 4475 torture messages; libFuzzer adds what it finds.
  cp -n ../tests/corpus/rfc4475/*.dat "corpus/$t/"
  # Profile inputs also start from the SEMS sample configuration.
  if [ "$t" = profile_inputs ]; then cp -n ../tests/sems/* "corpus/$t/"; fi
  if [ -d "seeds/$t" ]; then cp -n "seeds/$t"/* "corpus/$t/"; fi
  if [ -d "regressions/$t" ]; then cp -n "regressions/$t"/* "corpus/$t/"; fi
  echo "fuzz $t for ${secs}s"
  # A target that does not build must fail the smoke, not vanish in the grep below.
  cargo fuzz build "$t" >/dev/null
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=8192 2>&1 | grep -E "^(Done|#[0-9]+ *DONE)|ERROR|panicked|SUMMARY" || true
  # A crash leaves an artifact and a non-zero exit above is swallowed by grep: check for it.
  if compgen -G "artifacts/$t/crash-*" >/dev/null; then echo "crash in $t: see fuzz/artifacts/$t"; exit 1; fi
done
