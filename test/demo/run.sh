#!/usr/bin/env bash
# make run: a demo deployment in .demo/ (git-ignored). Creates the PKI and an
# admin token, starts vigil-server, enrolls one agent with a one-time token,
# lets the agent scan a capture that the project generates itself (benign
# sessions with a port scan inside), and shows findings arriving at the
# server. Ctrl-C stops everything. Needs no root and no third-party data.
#
# Environment (all optional): VIGIL_BIN (binaries, default bin/),
# VIGIL_DEMO_DIR (default .demo/; recreated), VIGIL_DEMO_QUIC (default
# 127.0.0.1:4433), VIGIL_DEMO_API (default 127.0.0.1:8443),
# VIGIL_DEMO_SECONDS (stop by itself after that many seconds; 0 = until
# Ctrl-C), VIGIL_DEMO_GENERATOR=1 (use the synthetic finding generator even
# when the netflow detector is built).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${VIGIL_BIN:-$top/bin}
DEMO=${VIGIL_DEMO_DIR:-$top/.demo}
QUIC_ADDR=${VIGIL_DEMO_QUIC:-127.0.0.1:4433}
API_ADDR=${VIGIL_DEMO_API:-127.0.0.1:8443}
DURATION=${VIGIL_DEMO_SECONDS:-0}   # 0: run until Ctrl-C

for b in vigil-server vigil-agent vigilctl vigil-trafficgen; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run 'make' first" >&2; exit 1; }
done
case "$DURATION" in ''|*[!0-9]*) echo "VIGIL_DEMO_SECONDS must be a whole number" >&2; exit 1 ;; esac

pids=()
stopping=0
# stop_all: SIGTERM to every demo process, wait (bounded), then SIGKILL.
stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  echo; echo "stopping demo..."
  # The agent first, so that it can finish its batch while the server is up.
  local i
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    local p=${pids[$i]}
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      echo "process $p did not stop within 30 s: killing it" >&2
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  echo "demo stopped (state kept in $DEMO; 'make clean' removes it)"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

# Only ever delete a directory this script made.
if [ -e "$DEMO" ]; then
  if [ -f "$DEMO/.vigil-demo" ] || [ -z "$(ls -A "$DEMO")" ]; then
    rm -rf "$DEMO"
  else
    echo "$DEMO exists and is not a demo directory (no .vigil-demo): not touching it" >&2
    exit 1
  fi
fi
mkdir -p "$DEMO"; touch "$DEMO/.vigil-demo"

echo "== 1. server PKI and first admin token"
"$BIN/vigil-server" init --data "$DEMO/server" --trust-domain demo.vigil --dns localhost
"$BIN/vigil-server" run --data "$DEMO/server" --quic "$QUIC_ADDR" --api "$API_ADDR" --log-format text >"$DEMO/server.log" 2>&1 &
pids+=($!)

export VIGIL_SERVER="https://$API_ADDR" VIGIL_CA="$DEMO/server/ca.pem" VIGIL_TOKEN="$(cat "$DEMO/server/admin.token")"
up=0
for _ in $(seq 1 600); do   # at most about 60 s (a loaded machine)
  kill -0 "${pids[0]}" 2>/dev/null || break
  if "$BIN/vigilctl" agents list >/dev/null 2>&1; then up=1; break; fi
  sleep 0.1
done
if [ "$up" != 1 ]; then
  echo "vigil-server did not come up; its log:" >&2; tail -20 "$DEMO/server.log" >&2; exit 1
fi

echo "== 2. one-time enrollment token for entity 'demo-org'"
tok_json=$("$BIN/vigilctl" token create --entity demo-org --ttl 1h --json)
token=$(printf '%s' "$tok_json" | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
pin=$(printf '%s' "$tok_json" | sed -n 's/.*"ca_pin": *"\([^"]*\)".*/\1/p')
[ -n "$token" ] && [ -n "$pin" ] || { echo "unexpected token create output: $tok_json" >&2; exit 1; }

echo "== 3. agent enrolls (key made locally, server checked against the CA pin $pin)"
# The token through the environment, not the command line (ps shows arguments).
VIGIL_ENROLL_TOKEN="$token" "$BIN/vigil-agent" enroll --server "localhost:${QUIC_ADDR##*:}" --ca-pin "$pin" --state "$DEMO/agent"

echo "== 4. demo capture: benign sessions with a SYN port scan from 10.99.66.6 inside"
"$BIN/vigil-trafficgen" --out "$DEMO/demo.pcap" --seed 42

agent_args=(run --state "$DEMO/agent" --metrics 127.0.0.1:0 --log-format text)
if [ "${VIGIL_DEMO_GENERATOR:-0}" != 1 ] && [ -x "$BIN/vigil-detector-netflow" ] && ls "$BIN"/models/*.vgb >/dev/null 2>&1; then
  echo "   the agent replays it through the netflow detector ($BIN/vigil-detector-netflow, $(ls "$BIN"/models/*.vgb | xargs -n1 basename | grep -v '^fileactivity-' | tr '\n' ' '))"
  echo "   per-sensor calibration: the first 20 s of the capture are observed without findings (--calibrate 20s)"
  agent_args+=(--pcap "$DEMO/demo.pcap" --calibrate 20s)
else
  echo "   (no detector plugin or baseline bundle in $BIN: the agent feeds its spool from the synthetic demo generator)"
  agent_args+=(--demo-findings 5)
fi
"$BIN/vigil-agent" "${agent_args[@]}" >"$DEMO/agent.log" 2>&1 &
pids+=($!)

cat <<EOT

== Vigil demo running
   API / console : https://$API_ADDR/   (CA: $VIGIL_CA)
   admin token   : in $DEMO/server/admin.token (0600; paste it into the console's login)
   QUIC endpoint : $QUIC_ADDR
   logs          : $DEMO/server.log, $DEMO/agent.log
   try           : VIGIL_SERVER=$VIGIL_SERVER VIGIL_CA=$VIGIL_CA VIGIL_TOKEN=\$(cat $DEMO/server/admin.token) $BIN/vigilctl findings list
Ctrl-C stops everything.

EOT
start=$(date +%s); seen=-1; cal=""
while :; do
  sleep 2
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "a demo process exited; the logs end with:" >&2
      tail -5 "$DEMO"/server.log "$DEMO"/agent.log >&2
      exit 1
    fi
  done
  n=$("$BIN/vigilctl" findings list --json --limit 100000 2>/dev/null | grep -o '"id":' | wc -l || true)
  if [ "$n" != "$seen" ]; then
    echo "--- $(date +%T) findings at the server: $n"
    "$BIN/vigilctl" findings list --limit 5 2>/dev/null | cut -c1-160 || true
    seen=$n
  fi
  c=$("$BIN/vigilctl" agents list 2>/dev/null | sed -n '2,$s/.*  active  *//p' || true)
  if [ -n "$c" ] && [ "$c" != "$cal" ] && [ "$c" != "-" ]; then
    echo "--- $(date +%T) the sensor's calibration, as the server shows it (model threshold -> local quantile): $c"
    cal=$c
  fi
  if [ "$DURATION" != 0 ] && [ $(( $(date +%s) - start )) -ge "$DURATION" ]; then break; fi
done
