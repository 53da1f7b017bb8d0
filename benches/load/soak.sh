#!/usr/bin/env bash
# Soak: SIPp UAC -> sbcd -> SIPp UAS over loopback UDP at a steady rate for a long time; sbcd's
# RSS and CPU are sampled every SAMPLE_S seconds and the failed calls counted. Long: not part of
# ./test.sh.
# Usage: benches/load/soak.sh [rate_cps] [minutes]   (defaults: 2000 10; env SAMPLE_S=30,
#        SBCD_CONFIG=... for a profile). Prints one line per sample, then the summary.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${1:-2000}
MINUTES=${2:-10}
SAMPLE_S=${SAMPLE_S:-30}
SC=tests/scenarios
command -v sipp >/dev/null || { echo "needs sipp (apt-get install sip-tester)"; exit 1; }
cargo build --release --locked -q -p sbc-core --bin sbcd
WORK=$(mktemp -d)
SBCD=
# (sbcd is killed outright: a graceful stop would drain for up to drain_timeout_s.)
trap 'kill $(jobs -p) 2>/dev/null; [ -n "$SBCD" ] && kill -9 $SBCD 2>/dev/null; rm -rf "$WORK"' EXIT
SBC_PORT=26060; UAS_PORT=26070; UAC_PORT=26080
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

target/release/sbcd --config "${SBCD_CONFIG:-benches/load/transparent.yaml}" --listen "udp:127.0.0.1:$SBC_PORT" --admin-listen off --log-level warn 2>"$WORK/sbcd.log" &
SBCD=$!
sleep 0.5
(cd "$WORK" && exec sipp -sf "$OLDPWD/$SC/uas_basic.xml" -i 127.0.0.1 -p $UAS_PORT -nostdin >/dev/null 2>&1) &
sleep 0.5
total=$((RATE * MINUTES * 60))
# SIPp may wait on the last few failed calls past its -timeout: cut it at the end.
(cd "$WORK" && exec timeout $((MINUTES * 60 + 30)) sipp 127.0.0.1:$UAS_PORT -rsa 127.0.0.1:$SBC_PORT -sf "$OLDPWD/$SC/uac_basic.xml" \
   -i 127.0.0.1 -p $UAC_PORT -r "$RATE" -m "$total" -l $((RATE * 2)) -nostdin -timeout $((MINUTES * 60 + 60))s \
   -trace_stat -stf stat.csv -fd "$SAMPLE_S" >uac.out 2>&1) &
UAC=$!
echo "minute rss_kib sbcd_cpu_pct calls_done failed"
start=$(date +%s)
t_prev=$(cpu_ticks $SBCD); s_prev=$start
first_rss=
while kill -0 $UAC 2>/dev/null; do
  sleep "$SAMPLE_S"
  kill -0 $SBCD 2>/dev/null || { echo "sbcd died"; exit 1; }
  now=$(date +%s); t=$(cpu_ticks $SBCD); rss=$(rss_kib $SBCD)
  cpu=$(awk -v a="$t_prev" -v b="$t" -v hz="$HZ" -v d=$((now - s_prev)) 'BEGIN{printf "%.1f", 100*(b-a)/hz/d}')
  read -r done failed < <(awk -F';' 'NR==1{for(i=1;i<=NF;i++){if($i=="SuccessfulCall(C)")s=i;if($i=="FailedCall(C)")f=i}} END{print $s+0, $f+0}' "$WORK/stat.csv" 2>/dev/null || echo "0 0")
  [ -z "$first_rss" ] && first_rss=$rss
  echo "$(awk -v d=$((now - start)) 'BEGIN{printf "%.1f", d/60}') $rss $cpu $done $failed"
  t_prev=$t; s_prev=$now
done
wait $UAC || true
read -r done failed < <(awk -F';' 'NR==1{for(i=1;i<=NF;i++){if($i=="SuccessfulCall(C)")s=i;if($i=="FailedCall(C)")f=i}} END{print $s+0, $f+0}' "$WORK/stat.csv")
echo "rate_cps=$RATE minutes=$MINUTES calls_done=$done failed=$failed rss_first_kib=$first_rss rss_last_kib=$(rss_kib $SBCD)"
