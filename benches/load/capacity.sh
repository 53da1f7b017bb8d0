#!/usr/bin/env bash
# Capacity of sbcd on this machine: SIPp UAC -> sbcd -> SIPp UAS over loopback (UDP).
#  1. call rate steps (20 s each, short calls with SDP): the highest rate with 0 failed calls,
#     and sbcd's CPU at that rate (100 % = one core);
#  2. memory per held call: RSS growth of sbcd with N calls established at once.
# Usage: benches/load/capacity.sh [rates...]   (env: STEP_S=20 HELD=5000 SKIP_HELD=1
#        SBCD_CONFIG=benches/load/rewrite.yaml to run the calls through a rewriting profile)
# Everything runs on 127.0.0.1. SIPp shares the machine, so compare ratios, not absolutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -gt 0 ]; then RATES=("$@"); else RATES=(200 400 800 1200 1600 2000 2500 3000); fi
STEP_S=${STEP_S:-20}
HELD=${HELD:-5000}
SC=tests/scenarios
command -v sipp >/dev/null || { echo "needs sipp (apt-get install sip-tester)"; exit 1; }
cargo build --release --locked -q -p sbc-core --bin sbcd
WORK=$(mktemp -d)
SBCD=
trap 'kill $(jobs -p) $SBCD 2>/dev/null; rm -rf "$WORK"' EXIT
SBC_PORT=25060; UAS_PORT=25070; UAC_PORT=25080
HZ=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

target/release/sbcd --config "${SBCD_CONFIG:-benches/load/transparent.yaml}" --listen "udp:127.0.0.1:$SBC_PORT" --admin-listen "${ADMIN_LISTEN:-off}" --log-level warn 2>"$WORK/sbcd.log" &
SBCD=$!
sleep 0.5
(cd "$WORK" && exec sipp -sf "$OLDPWD/$SC/uas_basic.xml" -i 127.0.0.1 -p $UAS_PORT -nostdin >/dev/null 2>&1) &
sleep 0.5

best=0; best_cpu=0
echo "rate_cps calls failed sbcd_cpu_pct"
[ "${HELD_ONLY:-0}" = 1 ] && RATES=()
for r in "${RATES[@]}"; do
  n=$((r * STEP_S))
  t0=$(cpu_ticks $SBCD); s0=$(date +%s.%N)
  set +e
  (cd "$WORK" && sipp 127.0.0.1:$UAS_PORT -rsa 127.0.0.1:$SBC_PORT -sf "$OLDPWD/$SC/uac_basic.xml" \
     -i 127.0.0.1 -p $UAC_PORT -r "$r" -m "$n" -l $((r * 2)) -nostdin -timeout $((STEP_S + 30))s \
     -trace_stat -stf "stat_$r.csv" >"uac_$r.out" 2>&1)
  rc=$?
  set -e
  t1=$(cpu_ticks $SBCD); s1=$(date +%s.%N)
  cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v s0="$s0" -v s1="$s1" 'BEGIN{printf "%.1f", 100*(b-a)/hz/(s1-s0)}')
  failed=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print $c+0}' "$WORK/stat_$r.csv" 2>/dev/null || echo "?")
  echo "$r $n $failed $cpu"
  if [ "$rc" -eq 0 ] && [ "$failed" = "0" ]; then best=$r; best_cpu=$cpu; else break; fi
  sleep 2
done
echo "max_cps_with_0_failed=$best sbcd_cpu_pct_at_max=$best_cpu"
[ "${SKIP_HELD:-0}" = 1 ] && exit 0

# Held calls, in a fresh sbcd (the allocator keeps what the rate steps used): HELD calls
# established at 500/s and held, RSS read once all are up (their setup transactions included).
kill $SBCD; wait $SBCD 2>/dev/null || true
target/release/sbcd --config "${SBCD_CONFIG:-benches/load/transparent.yaml}" --listen "udp:127.0.0.1:$SBC_PORT" --admin-listen "${ADMIN_LISTEN:-off}" --log-level warn 2>>"$WORK/sbcd.log" &
SBCD=$!
sleep 1
base=$(rss_kib $SBCD)
(cd "$WORK" && exec sipp 127.0.0.1:$UAS_PORT -rsa 127.0.0.1:$SBC_PORT -sf "$OLDPWD/$SC/uac_held.xml" \
   -i 127.0.0.1 -p $((UAC_PORT + 1)) -r 500 -m "$HELD" -l "$HELD" -d 60000 -nostdin -timeout 120s \
   >/dev/null 2>&1) &
sleep $((HELD / 500 + 3))
held=$(rss_kib $SBCD)
echo "rss_base_kib=$base rss_with_${HELD}_held_kib=$held per_call_bytes=$(( (held - base) * 1024 / HELD ))"
