#!/usr/bin/env bash
# What cluster mode costs per call, in one run: the call-control harness
# (benches/load/callcontrol.yaml: a CDR and a cc_pcalls count per call), three ways:
#   1. a single node (capacity.sh);
#   2. the same node in cluster mode, against a private redis-server on loopback (capacity.sh);
#   3. two cluster nodes on that Redis, each taking half of every rate from its own SIPp UAC:
#      the highest total rate with 0 failed calls, and both nodes' CPU summed.
# Then the Redis round trips and commands each call took in 2 and 3.
# Usage: benches/load/cluster.sh [rates...]   (default: 200 1000; env: STEP_S=15)
# Everything runs on 127.0.0.1 and shares the machine with SIPp and Redis: compare ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -gt 0 ]; then RATES=("$@"); else RATES=(200 1000); fi
export STEP_S=${STEP_S:-15} SKIP_HELD=1
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
command -v sipp >/dev/null || { echo "needs sipp (apt-get install sip-tester)"; exit 1; }
WORK=$(mktemp -d)
REDIS_PORT=26379
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
REDIS=$!
PIDS=()
trap 'kill $REDIS "${PIDS[@]}" 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 0.5
node_yaml() {
  cat benches/load/callcontrol.yaml
  printf 'cluster:\n  node_id: %s\n  redis_url: redis://127.0.0.1:%s\n  key_prefix: bench\n' "$1" $REDIS_PORT
}
cp benches/load/callcontrol.yaml "$WORK/single.yaml"
node_yaml bench >"$WORK/cluster.yaml"
node_yaml a >"$WORK/a.yaml"
node_yaml b >"$WORK/b.yaml"

# Calls placed (the rows of a rate table in $1), and what Redis executed meanwhile: round trips
# (scripts the nodes sent) and every command (those the scripts ran included). The leases'
# renewals (one per node every 5 s) are in there too.
redis_per_call() {
  local calls
  calls=$(awk '$1 ~ /^[0-9]+$/ && NF == 4 {n += $2} END {print n + 0}' "$1")
  redis-cli -p $REDIS_PORT INFO commandstats | tr -d '\r' | awk -F'[:=,]' -v calls="$calls" '
    /^cmdstat_/ { total += $3; if ($1 ~ /evalsha|eval$/) trips += $3 }
    END { if (calls > 0) printf "calls=%d redis_round_trips_per_call=%.2f redis_commands_per_call=%.2f\n", calls, trips / calls, total / calls }'
}

echo "== single node"
SBCD_CONFIG="$WORK/single.yaml" benches/load/capacity.sh "${RATES[@]}" | tee "$WORK/single.out"
redis-cli -p $REDIS_PORT CONFIG RESETSTAT >/dev/null
echo "== cluster mode (the same node with a Redis)"
SBCD_CONFIG="$WORK/cluster.yaml" benches/load/capacity.sh "${RATES[@]}" | tee "$WORK/cluster.out"
redis_per_call "$WORK/cluster.out"

echo "== two cluster nodes on one Redis (each rate split between them)"
redis-cli -p $REDIS_PORT CONFIG RESETSTAT >/dev/null
SC=tests/scenarios
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
target/release/sbcd --config "$WORK/a.yaml" --listen udp:127.0.0.1:25060 --admin-listen off --log-level warn 2>"$WORK/a.log" &
A=$!; PIDS+=("$A")
target/release/sbcd --config "$WORK/b.yaml" --listen udp:127.0.0.1:25062 --admin-listen off --log-level warn 2>"$WORK/b.log" &
B=$!; PIDS+=("$B")
sleep 1
(cd "$WORK" && exec sipp -sf "$OLDPWD/$SC/uas_basic.xml" -i 127.0.0.1 -p 25070 -nostdin >/dev/null 2>&1) &
PIDS+=("$!")
sleep 0.5
echo "rate_cps calls failed sbcd_cpu_pct"
best=0; best_cpu=0
for r in "${RATES[@]}"; do
  half=$((r / 2)); n=$((half * STEP_S))
  a0=$(cpu_ticks $A); b0=$(cpu_ticks $B); s0=$(date +%s.%N)
  uacs=()
  for side in 0 2; do
    (cd "$WORK" && sipp 127.0.0.1:25070 -rsa 127.0.0.1:$((25060 + side)) -sf "$OLDPWD/$SC/uac_basic.xml" \
       -i 127.0.0.1 -p $((25080 + side)) -r "$half" -m "$n" -l $((half * 2)) -nostdin -timeout $((STEP_S + 30))s \
       -trace_stat -stf "stat_${r}_$side.csv" >"uac_${r}_$side.out" 2>&1) &
    uacs+=("$!")
  done
  rc=0
  for p in "${uacs[@]}"; do wait "$p" || rc=$?; done
  a1=$(cpu_ticks $A); b1=$(cpu_ticks $B); s1=$(date +%s.%N)
  cpu=$(awk -v a="$((a1 - a0 + b1 - b0))" -v hz="$HZ" -v s0="$s0" -v s1="$s1" 'BEGIN{printf "%.1f", 100*a/hz/(s1-s0)}')
  failed=0
  for side in 0 2; do
    f=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print $c+0}' "$WORK/stat_${r}_$side.csv" 2>/dev/null || echo 1)
    failed=$((failed + f))
  done
  echo "$r $((n * 2)) $failed $cpu" | tee -a "$WORK/pair.out"
  if [ "$rc" -eq 0 ] && [ "$failed" = "0" ]; then best=$r; best_cpu=$cpu; else break; fi
  sleep 2
done
echo "max_cps_with_0_failed=$best sbcd_cpu_pct_at_max=$best_cpu (both nodes)"
redis_per_call "$WORK/pair.out"
