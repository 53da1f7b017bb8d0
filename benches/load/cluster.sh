#!/usr/bin/env bash
# What cluster mode costs per call, in one run: the call-control harness
# (benches/load/callcontrol.yaml: a CDR and a cc_pcalls count per call) through capacity.sh,
# first on a single node, then in cluster mode against a private redis-server on loopback, with
# the Redis round trips and commands each call took.
# Usage: benches/load/cluster.sh [rates...]   (default: 200 1000; env: STEP_S=15)
# Everything runs on 127.0.0.1 and shares the machine with SIPp and Redis: compare ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -gt 0 ]; then RATES=("$@"); else RATES=(200 1000); fi
export STEP_S=${STEP_S:-15} SKIP_HELD=1
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
WORK=$(mktemp -d)
REDIS_PORT=26379
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
REDIS=$!
trap 'kill $REDIS 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 0.5
cp benches/load/callcontrol.yaml "$WORK/single.yaml"
{ cat benches/load/callcontrol.yaml
  printf 'cluster:\n  node_id: bench\n  redis_url: redis://127.0.0.1:%s\n  key_prefix: bench\n' $REDIS_PORT
} >"$WORK/cluster.yaml"

echo "== single node"
SBCD_CONFIG="$WORK/single.yaml" benches/load/capacity.sh "${RATES[@]}" | tee "$WORK/single.out"
redis-cli -p $REDIS_PORT CONFIG RESETSTAT >/dev/null
echo "== cluster mode (the same node with a Redis)"
SBCD_CONFIG="$WORK/cluster.yaml" benches/load/capacity.sh "${RATES[@]}" | tee "$WORK/cluster.out"

# Calls placed (the rows of the rate table), and what Redis executed meanwhile: round trips
# (scripts the node sent) and every command (those the scripts ran included). The lease's
# renewals (one every 5 s) are in there too.
calls=$(awk '$1 ~ /^[0-9]+$/ && NF == 4 {n += $2} END {print n + 0}' "$WORK/cluster.out")
redis-cli -p $REDIS_PORT INFO commandstats | tr -d '\r' | awk -F'[:=,]' -v calls="$calls" '
  /^cmdstat_/ { total += $3; if ($1 ~ /evalsha|eval$/) trips += $3 }
  END { if (calls > 0) printf "calls=%d redis_round_trips_per_call=%.2f redis_commands_per_call=%.2f\n", calls, trips / calls, total / calls }'
