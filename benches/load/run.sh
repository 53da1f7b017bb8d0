#!/usr/bin/env bash
# Side-by-side load harness (issue #8): SIPp UAC -> system -> SIPp UAS over loopback UDP, for
#   sbcd          benches/load/transparent.yaml: the transparent profile, SIPp trusted (two full dialogs per call),
#   sbcd-typical  benches/load/typical.yaml (rewriting profile + CDR + parallel-call limit),
#   kamailio      Debian's Kamailio as a stateful proxy (tm + dialog + rr, TLSF allocators),
# started together and measured interleaved (each step runs every system in turn, so drift of a
# shared machine hits all of them alike). Per system:
#   1. at a fixed rate (FIXED_RATE, FIXED_S): CPU of the system's own processes per 1,000 calls,
#      INVITE transit through the system (tcpdump timestamps, p50/p99), SIPp's INVITE->200 time;
#   2. a rate ladder (RATES, STEP_S each): the highest rate with < 0.1 % failed calls (RFC 7502's
#      session establishment rate), and the CPU per call there;
#   3. memory: PSS of a fresh system holding each of HELD calls (set up at HELD_RATE).
# SIPp's own CPU is recorded for every step: on 2 cores it competes with the system under test.
# Then the media harness (relay_load: sbcd's relay and rtpengine, same packets) and the report
# is written from the results (OUT, default docs/benchmarks/latest-run.md).
#
# Usage: benches/load/run.sh            (about 25 minutes on 2 vCPU)
#        QUICK=1 benches/load/run.sh    (a few minutes: short steps, few rates; a smoke)
# env: SYSTEMS, RATES, STEP_S, FIXED_RATE, FIXED_S, HELD, HELD_RATE, SETTLE_S, MEDIA_STREAMS,
#      MEDIA_S, TLS_RATES, TLS_S, OUT, NO_MEDIA=1, NO_TLS=1, KEEP_WORK=1 (keep the run's directory: SIPp stats, captures)
# Needs sipp (sip-tester), kamailio, rtpengine-daemon, tcpdump: installed with apt-get when
# missing and run as root (as on the CI machine); a system that is missing is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
if [ "${QUICK:-0}" = 1 ]; then
  : "${RATES:=1000 4000}" "${STEP_S:=8}" "${FIXED_S:=8}" "${HELD:=2000}" "${MEDIA_STREAMS:=500}"
fi
SYSTEMS=${SYSTEMS:-sbcd sbcd-typical kamailio}
RATES=${RATES:-1000 2000 3000 4000 5000 6000 7000 8000}
STEP_S=${STEP_S:-30}
FIXED_RATE=${FIXED_RATE:-200}
FIXED_S=${FIXED_S:-30}
HELD=${HELD:-5000 50000}
HELD_RATE=${HELD_RATE:-1000}
# Seconds for finished transactions to expire (sbcd keeps them 32 s) before a reading.
SETTLE_S=${SETTLE_S:-35}
MEDIA_STREAMS=${MEDIA_STREAMS:-1000 2000}
# SIP over TLS beside UDP (tls_load, our own generator: Debian's SIPp has no TLS).
TLS_RATES=${TLS_RATES:-200 1000 2000}
TLS_S=${TLS_S:-10}
OUT=${OUT:-$ROOT/docs/benchmarks/latest-run.md}
SC=$ROOT/benches/load/scenarios
# A proxy with several UDP workers (Kamailio's children) may relay a 180 after the 200; SIPp
# would abort such a call as "unexpected". A real phone ignores a late 180, and so does SIPp in
# the rate steps. Any other unexpected answer then leaves its call waiting: the scenario's
# receive timeouts fail it (counted), so nothing is hidden.
UNEXPECTED_OK="-default_behaviors all,-abortunexp"
HZ=$(getconf CLK_TCK)

need() { # command, Debian package
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $2" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 || true
  fi
  command -v "$1" >/dev/null
}
need sipp sip-tester || { echo "needs sipp (apt-get install sip-tester)"; exit 1; }
need tcpdump tcpdump || echo "no tcpdump: INVITE transit not measured" >&2
if [[ " $SYSTEMS " == *" kamailio "* ]] && ! need kamailio kamailio; then
  echo "no kamailio: skipped" >&2; SYSTEMS=${SYSTEMS/kamailio/}
fi

echo "building sbcd, relay_load and tls_load (release)" >&2
cargo build --release --locked -q -p sbc-core --bin sbcd -p sbc-benches --bin relay_load --bin tls_load

WORK=$(mktemp -d)
RES=$WORK/results # one "key value" per line, read back when the report is written
: >"$RES"
# The source the binaries were built from (the tree may change while the run goes on).
dirty=$([ -n "$(git status --porcelain -- . ':(exclude)docs/benchmarks/latest-run.md' 2>/dev/null)" ] && echo -dirty || true)
echo "built_from $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty" >>"$RES"
declare -A MAIN_PID UAS_PID PORT UAS_PORT
cleanup() {
  for s in "${!MAIN_PID[@]}"; do stop_system "$s"; done
  kill $(jobs -p) 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each system gets its own ports (and its own SIPp UAS), so all can stay up during the run.
i=0
for s in $SYSTEMS; do
  PORT[$s]=$((27060 + 100 * i)); UAS_PORT[$s]=$((27070 + 100 * i)); i=$((i + 1))
done

pids_of() { # the system's processes: its main process and (Kamailio) its children
  local p=${MAIN_PID[$1]}
  echo "$p" $(pgrep -P "$p" 2>/dev/null || true)
}
cpu_ticks() { # user+system ticks of a set of processes
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat")))
  done
  echo $t
}
pss_kib() { # proportional set size of a set of processes (shared memory split, not double counted)
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/smaps_rollup" ] && t=$((t + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")))
  done
  echo $t
}
put() { echo "$1 $2" >>"$RES"; }
get() { awk -v k="$1" '$1==k {v=$2} END {print (v=="" ? "-" : v)}' "$RES"; }

start_system() {
  local s=$1 port=${PORT[$1]} next=127.0.0.1:${UAS_PORT[$1]}
  case $s in
    sbcd | sbcd-typical)
      # The transparent profile, SIPp's loopback addresses trusted (benches/load/transparent.yaml).
      local cfg=(--config "$ROOT/benches/load/transparent.yaml")
      if [ "$s" = sbcd-typical ]; then
        # Its CDRs go to the run's directory (a full run writes about a million lines).
        sed "s#/tmp/sbc-bench-cdr.csv#$WORK/cdr.csv#" "$ROOT/benches/load/typical.yaml" >"$WORK/typical.yaml"
        cfg=(--config "$WORK/typical.yaml")
      fi
      # The transparent profile relays to the R-URI, which SIPp's UAC points at its UAS.
      "$ROOT/target/release/sbcd" "${cfg[@]}" --listen "udp:127.0.0.1:$port" --admin-listen off \
        --log-level warn 2>>"$WORK/$s.log" &
      MAIN_PID[$s]=$!
      ;;
    kamailio)
      sed -e "s/@LISTEN@/127.0.0.1:$port/" -e "s/@NEXT_HOP@/$next/" -e "s/@CHILDREN@/4/" \
        "$ROOT/benches/load/kamailio.cfg" >"$WORK/kamailio.cfg"
      mkdir -p "$WORK/kamailio-run"
      kamailio -f "$WORK/kamailio.cfg" -DD -E -x tlsf -X tlsf -m 1024 -M 16 -w "$WORK" \
        -Y "$WORK/kamailio-run" 2>>"$WORK/$s.log" &
      MAIN_PID[$s]=$!
      ;;
  esac
  sleep 1
  kill -0 "${MAIN_PID[$s]}" || { echo "$s did not start:"; tail "$WORK/$s.log"; exit 1; }
}
stop_system() {
  local p=${MAIN_PID[$1]:-}
  [ -n "$p" ] || return 0
  # Killed outright: a graceful stop would drain calls, and a held-call test leaves thousands.
  kill -9 $(pids_of "$1") 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "MAIN_PID[$1]"
}
start_uas() {
  (cd "$WORK" && exec sipp -sf "$SC/uas_bench.xml" -i 127.0.0.1 -p "${UAS_PORT[$1]}" -nostdin \
    >/dev/null 2>&1) &
  UAS_PID[$1]=$!
}

# One measured step: RATE calls/s for SECS seconds through system S. Writes
# "<tag>.<key> value" lines: calls, failed, cpu_pct, ms_per_call, sipp_cpu_pct, rtt p50/p99.
step() {
  local s=$1 rate=$2 secs=$3 tag=$4 transit=${5:-0}
  local n=$((rate * secs)) dir="$WORK/$tag" uac_port=$((${PORT[$1]} + 20))
  mkdir -p "$dir"
  local pids; pids=$(pids_of "$s")
  local capture=
  if [ "$transit" = 1 ] && command -v tcpdump >/dev/null; then
    # INVITE requests only (payload starts with "INVI"), into and out of the system's port.
    tcpdump -i lo -n -s 64 -B 8192 -w "$dir/invites.pcap" \
      "udp port ${PORT[$s]} and udp[8:4] = 0x494e5649" 2>/dev/null &
    capture=$!
    sleep 1
  fi
  local t0 u0 s0 s1 t1 u1 rtt_opts=()
  [ "$transit" = 1 ] && rtt_opts=(-trace_rtt -rtt_freq 1)
  close_cpu "$s"
  t0=$(cpu_ticks $pids); u0=$(cpu_ticks "${UAS_PID[$s]}"); s0=$(date +%s.%N)
  # SIPp's own -timeout does not always stop it (calls left waiting): coreutils' does.
  (cd "$dir" && exec timeout -s INT $((secs + 60)) /usr/bin/time -f "%U %S" -o uac.time \
    sipp "127.0.0.1:${UAS_PORT[$s]}" -rsa "127.0.0.1:${PORT[$s]}" -sf "$SC/uac_bench.xml" \
    -i 127.0.0.1 -p "$uac_port" -r "$rate" -m "$n" -l $((rate * 2 + 100)) -nostdin \
    -timeout $((secs + 30))s $UNEXPECTED_OK -trace_stat -stf stat.csv -fd 1 "${rtt_opts[@]}" >uac.out 2>&1) || true
  t1=$(cpu_ticks $pids); u1=$(cpu_ticks "${UAS_PID[$s]}"); s1=$(date +%s.%N)
  if [ -n "$capture" ]; then sleep 0.5; kill "$capture" 2>/dev/null || true; wait "$capture" 2>/dev/null || true; fi
  local ok failed
  ok=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="SuccessfulCall(C)") c=i} END{print $c+0}' "$dir/stat.csv" 2>/dev/null || echo 0)
  failed=$((n - ok))
  # When SIPp had started every call (its stats, one row a second): the rate kept or not.
  local started
  started=$(awk -F';' -v n="$n" 'NR==1{for(i=1;i<=NF;i++){if($i=="OutgoingCall(C)") o=i; if($i=="ElapsedTime(C)") e=i}; next}
    $o >= n {split($e, t, ":"); print t[1]*3600 + t[2]*60 + t[3]; exit}' "$dir/stat.csv" 2>/dev/null)
  put "$tag.started_s" "${started:-}"
  local wall cpu uas_cpu uac_cpu
  wall=$(awk -v a="$s0" -v b="$s1" 'BEGIN{print b-a}')
  # CPU % over the time calls were running: a few calls left hanging until SIPp is stopped
  # must not dilute it over the whole wait.
  local busy=$wall
  [ -n "$started" ] && busy=$(awk -v s="$started" -v w="$wall" 'BEGIN{print (s + 1 < w ? s + 1 : w)}')
  cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN{print (b-a)/hz}')
  uas_cpu=$(awk -v a="$u0" -v b="$u1" -v hz="$HZ" 'BEGIN{print (b-a)/hz}')
  # (time(1) puts "Command exited with non-zero status" first when SIPp saw a failed call.)
  uac_cpu=$(tail -n 1 "$dir/uac.time" 2>/dev/null | awk '{print $1+$2}')
  put "$tag.calls" "$n"
  put "$tag.failed" "$failed"
  put "$tag.failed_pct" "$(awk -v f="$failed" -v n="$n" 'BEGIN{printf "%.3f", 100*f/n}')"
  put "$tag.cpu_pct" "$(awk -v c="$cpu" -v w="$busy" 'BEGIN{printf "%.1f", 100*c/w}')"
  # CPU per call counts until this system's next step (close_cpu): a system's delayed work for
  # these calls (sbcd keeps finished transactions 32 s, Kamailio 5 s) is charged to them.
  PENDING_T0[$s]=$t0; PENDING_TAG[$s]=$tag; PENDING_OK[$s]=$ok
  put "$tag.sipp_cpu_pct" "$(awk -v a="$uac_cpu" -v b="$uas_cpu" -v w="$busy" 'BEGIN{printf "%.1f", 100*(a+b)/w}')"
  # SIPp's INVITE -> 200 times (it measures whole milliseconds).
  local rtt; rtt=$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)
  if [ -n "$rtt" ]; then
    awk -F';' 'NR>1 && $3=="invite" {print $2}' "$rtt" | sort -n >"$dir/rtt.sorted"
    put "$tag.rtt_p50_ms" "$(pct "$dir/rtt.sorted" 50)"
    put "$tag.rtt_p99_ms" "$(pct "$dir/rtt.sorted" 99)"
  fi
  if [ -n "$capture" ]; then
    tcpdump -r "$dir/invites.pcap" -n -tt 2>/dev/null | awk -v p="${PORT[$s]}" -f "$ROOT/benches/load/transit.awk" |
      sort -n >"$dir/transit.sorted"
    local pairs ins
    pairs=$(wc -l <"$dir/transit.sorted")
    ins=$(tcpdump -r "$dir/invites.pcap" -n 2>/dev/null | awk -v p="${PORT[$s]}" '{split($5, d, "."); sub(":", "", d[5]); if (d[5] == p) n++} END{print n+0}')
    put "$tag.transit_n" "$pairs"
    # Reported when (nearly) every call's INVITE was seen going through.
    if [ "$pairs" -lt $((n * 99 / 100)) ] || [ "$ins" -gt "$n" ]; then
      echo "$tag: $ins INVITEs in, $pairs out, $n calls: transit not reported" >&2
      : >"$dir/transit.sorted"
    fi
    put "$tag.transit_p50_us" "$(pct "$dir/transit.sorted" 50)"
    put "$tag.transit_p99_us" "$(pct "$dir/transit.sorted" 99)"
  fi
  put "$tag.wall_s" "$wall"
  echo "$tag: $n calls, $failed failed, ${wall%.*} s, system CPU $(get "$tag.cpu_pct") %, SIPp CPU $(get "$tag.sipp_cpu_pct") %${capture:+, transit p50 $(get "$tag.transit_p50_us") us}" >&2
  # Passed: < 0.1 % failed, and the rate was kept (SIPp slows down rather than fail calls
  # when the system lags: if starting every call took over 5 % longer, it ran below its rate).
  [ "$failed" -le $((n / 1000)) ] && [ -n "$started" ] && [ "$started" -le $((secs * 105 / 100 + 2)) ]
}
declare -A PENDING_T0 PENDING_TAG PENDING_OK
# Charges the CPU a system used since its last step started to that step's calls.
close_cpu() {
  local s=$1 tag=${PENDING_TAG[$1]:-}
  [ -n "$tag" ] || return 0
  local t; t=$(cpu_ticks $(pids_of "$s"))
  put "$tag.ms_per_call" "$(awk -v a="${PENDING_T0[$s]}" -v b="$t" -v hz="$HZ" -v n="${PENDING_OK[$s]}" 'BEGIN{printf "%.3f", (n>0 ? 1000*(b-a)/hz/n : 0)}')"
  echo "$tag: $(get "$tag.ms_per_call") ms CPU per call (until its next step)" >&2
  unset "PENDING_TAG[$s]"
}
pct() { # file of sorted numbers, percentile
  awk -v p="$2" '{v[NR]=$1} END{if(NR==0){print "-"; exit} i=int((NR-1)*p/100+0.5)+1; print v[i]}' "$1"
}

for s in $SYSTEMS; do start_system "$s"; start_uas "$s"; done
sleep 1

echo "== fixed rate: $FIXED_RATE calls/s for $FIXED_S s" >&2
for s in $SYSTEMS; do step "$s" "$FIXED_RATE" "$FIXED_S" "fixed.$s" 1 || true; sleep 2; done

echo "== rate ladder: $RATES calls/s, $STEP_S s each" >&2
declare -A DONE
for r in $RATES; do
  for s in $SYSTEMS; do
    [ -n "${DONE[$s]:-}" ] && continue
    if step "$s" "$r" "$STEP_S" "rate$r.$s"; then
      put "max.$s" "$r"
    else
      DONE[$s]=1
    fi
    sleep 3 # the previous step's transactions linger (Timer J/K); let them settle
  done
done

sleep "$SETTLE_S" # the last steps' finished transactions expire, then their CPU is charged
for s in $SYSTEMS; do close_cpu "$s"; done

echo "== held calls: $HELD" >&2
for s in $SYSTEMS; do
  for n in $HELD; do
    stop_system "$s"; start_system "$s"; sleep 1
    base=$(pss_kib $(pids_of "$s"))
    dir="$WORK/held$n.$s"; mkdir -p "$dir"
    (cd "$dir" && exec sipp "127.0.0.1:${UAS_PORT[$s]}" -rsa "127.0.0.1:${PORT[$s]}" \
      -sf "$ROOT/tests/scenarios/uac_held.xml" -i 127.0.0.1 -p $((${PORT[$s]} + 30)) \
      -r "$HELD_RATE" -m "$n" -l "$n" -d 3600000 -nostdin -trace_stat -stf stat.csv -fd 1 \
      >/dev/null 2>&1) &
    uac=$!
    # Wait for every call to be up (SIPp's stat file counts the calls it has set up).
    for _ in $(seq 1 $((n / HELD_RATE + 60))); do
      sleep 1
      up=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="CurrentCall") c=i} END{print $c+0}' "$dir/stat.csv" 2>/dev/null || echo 0)
      [ "$up" -ge "$n" ] && break
    done
    # Held calls at rest: the setup transactions are gone (sbcd keeps them 32 s, Kamailio 5 s).
    sleep "$SETTLE_S"
    held=$(pss_kib $(pids_of "$s"))
    put "held$n.$s.up" "$up"
    put "held$n.$s.base_kib" "$base"
    put "held$n.$s.pss_kib" "$held"
    put "held$n.$s.kib_per_call" "$(awk -v a="$base" -v b="$held" -v n="$up" 'BEGIN{printf "%.2f", (n>0 ? (b-a)/n : 0)}')"
    echo "held$n.$s: $up calls up, PSS $base -> $held KiB, $(get "held$n.$s.kib_per_call") KiB per call" >&2
    kill $uac 2>/dev/null || true; wait $uac 2>/dev/null || true
  done
  stop_system "$s"
done

if [ "${NO_MEDIA:-0}" != 1 ]; then
  echo "== media: relay_load, sbcd's relay and rtpengine" >&2
  RTPENGINE_ARGS=()
  if need rtpengine rtpengine-daemon; then
    # Userspace forwarding only (no kernel module: --table=-1), controlled over ng.
    rtpengine --foreground --log-stderr --log-level=3 --table=-1 --interface=127.0.0.1 \
      --listen-ng=127.0.0.1:19222 --port-min=40000 --port-max=59999 --pidfile="$WORK/rtpengine.pid" \
      --delete-delay=0 2>"$WORK/rtpengine.log" &
    RTPENGINE=$!
    sleep 1
    if kill -0 "$RTPENGINE" 2>/dev/null; then
      RTPENGINE_ARGS=(--rtpengine 127.0.0.1:19222 --rtpengine-pid "$RTPENGINE")
    else
      echo "rtpengine did not start: $(tail -n 3 "$WORK/rtpengine.log")" >&2; RTPENGINE=
    fi
  else
    echo "no rtpengine: the relay is measured alone" >&2
  fi
  for n in $MEDIA_STREAMS; do
    "$ROOT/target/release/relay_load" --streams "$n" --seconds "${MEDIA_S:-10}" "${RTPENGINE_ARGS[@]}" \
      --results "media$n" >>"$RES" 2>"$WORK/media$n.log" || { echo "relay_load failed:"; cat "$WORK/media$n.log"; }
    tail -n 4 "$WORK/media$n.log" >&2
    # The same streams with side A in SRTP (SDES) and side B plain: the relay decrypts and
    # encrypts every packet (rtpengine is asked for the same bridging).
    "$ROOT/target/release/relay_load" --streams "$n" --seconds "${MEDIA_S:-10}" --srtp on "${RTPENGINE_ARGS[@]}" \
      --results "srtp$n" >>"$RES" 2>"$WORK/srtp$n.log" || { echo "relay_load --srtp failed:"; cat "$WORK/srtp$n.log"; }
    tail -n 4 "$WORK/srtp$n.log" >&2
  done
  if [ -n "${RTPENGINE:-}" ]; then kill "$RTPENGINE" 2>/dev/null || true; wait "$RTPENGINE" 2>/dev/null || true; fi
fi

if [ "${NO_TLS:-0}" != 1 ]; then
  echo "== tls: calls over TLS beside UDP (tls_load)" >&2
  "$ROOT/target/release/tls_load" --sbcd "$ROOT/target/release/sbcd" --rates "${TLS_RATES// /,}" \
    --seconds "$TLS_S" --results tls >>"$RES" 2>"$WORK/tls.log" || { echo "tls_load failed:"; cat "$WORK/tls.log"; }
  tail -n 7 "$WORK/tls.log" >&2
fi

echo "== writing $OUT" >&2
SYSTEMS="$SYSTEMS" RATES="$RATES" HELD="$HELD" MEDIA_STREAMS="$MEDIA_STREAMS" FIXED_RATE="$FIXED_RATE" TLS_RATES="$TLS_RATES" \
  FIXED_S="$FIXED_S" STEP_S="$STEP_S" HELD_RATE="$HELD_RATE" QUICK="${QUICK:-0}" \
  "$ROOT/benches/load/report.sh" "$RES" >"$WORK/report.md"
mv "$WORK/report.md" "$OUT"
echo "done: $OUT" >&2
