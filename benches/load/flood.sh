#!/usr/bin/env bash
# Flood: one address (127.0.0.2) sends new INVITEs to sbcd on its default configuration as fast
# as one thread can (or FLOOD_RATE a second) for FLOOD_S seconds, while SIPp places CALLS calls
# from 127.0.0.1 through it. Reports the offered rate, the replies the flood got, the calls
# completed and failed, sbcd's CPU over the flood (100 % = one core) and its peak RSS.
# SOURCES=N spreads the flood over N addresses (127.0.10.1 ...), each below the per-source rate
# when N is large enough: a distributed flood.
# Usage: benches/load/flood.sh   (env: FLOOD_S=10 FLOOD_RATE=0 CALLS=20 CALL_RATE=10 SOURCES=1)
# Everything runs on 127.0.0.0/8. A benchmark, not a test: tests/tests/flood.rs asserts.
set -euo pipefail
cd "$(dirname "$0")/../.."
FLOOD_S=${FLOOD_S:-10}
FLOOD_RATE=${FLOOD_RATE:-0}
CALLS=${CALLS:-20}
CALL_RATE=${CALL_RATE:-10}
SC=tests/scenarios
command -v sipp >/dev/null || { echo "needs sipp (apt-get install sip-tester)"; exit 1; }
cargo build --release --locked -q -p sbc-core --bin sbcd
cargo build --release --locked -q -p sbc-e2e --bin flood
WORK=$(mktemp -d)
SBCD=
trap 'kill $(jobs -p) $SBCD 2>/dev/null; rm -rf "$WORK"' EXIT
SBC_PORT=26060; UAS_PORT=26070; UAC_PORT=26080; NOWHERE=127.0.0.1:26099
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# The embedded default configuration: no --config.
target/release/sbcd --listen "udp:127.0.0.1:$SBC_PORT" --admin-listen off --log-level warn 2>"$WORK/sbcd.log" &
SBCD=$!
(cd "$WORK" && exec sipp -sf "$OLDPWD/$SC/uas_basic.xml" -i 127.0.0.1 -p $UAS_PORT -nostdin >/dev/null 2>&1) &
sleep 1

t0=$(cpu_ticks $SBCD); s0=$(date +%s.%N)
SOURCES=${SOURCES:-1}
if [ "$SOURCES" -le 1 ]; then FROM=127.0.0.2; else
  FROM=$(seq 0 $((SOURCES - 1)) | awk '{printf "%s127.0.%d.%d", (NR>1?",":""), 10 + int($1 / 250), 1 + $1 % 250}')
fi
target/release/flood "$FROM" "127.0.0.1:$SBC_PORT" "$NOWHERE" "$FLOOD_RATE" "$FLOOD_S" >"$WORK/flood.out" &
FLOOD=$!
sleep 1
set +e
(cd "$WORK" && sipp 127.0.0.1:$UAS_PORT -rsa 127.0.0.1:$SBC_PORT -sf "$OLDPWD/$SC/uac_basic.xml" \
   -i 127.0.0.1 -p $UAC_PORT -r "$CALL_RATE" -m "$CALLS" -nostdin -timeout $((FLOOD_S + 30))s \
   -trace_stat -stf stat.csv >uac.out 2>&1)
set -e
wait $FLOOD
t1=$(cpu_ticks $SBCD); s1=$(date +%s.%N)
cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v s0="$s0" -v s1="$s1" 'BEGIN{printf "%.0f", 100*(b-a)/hz/(s1-s0)}')
col() { awk -F';' -v k="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==k) c=i} END{print $c+0}' "$WORK/stat.csv"; }
ok=$(col "SuccessfulCall(C)"); failed=$(col "FailedCall(C)")
peak=$(awk '/VmHWM/ {print $2}' "/proc/$SBCD/status")
read -r sent secs rate replies < <(sed -E 's/[a-z]+=//g' "$WORK/flood.out")
echo "| sources | flood INVITEs | offered rate | replies to the flood | calls completed | calls failed | sbcd CPU | sbcd peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
echo "| $SOURCES | $sent in ${secs} s | ${rate}/s | $replies | $ok of $CALLS | $failed | ${cpu} % | $((peak / 1024)) MiB |"
