#!/usr/bin/env bash
# Issue 6's overload row: one subscriber reading 20,000 messages/s while 8
# publishers send unthrottled (robust-bench fanin --sub-read-rate), with 20
# p2p pairs at 200 msgs/s beside it. For Mosquitto and robust-server in
# turn, prints the broker's RSS before and its peak (VmHWM), what the
# fan-in delivered and lost, and the pairs' p99 alone and during the
# overload.
#
#   loadtest/overload.sh            # QoS 0 and QoS 1
#   QOS=1 loadtest/overload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --bin robust-server --bin robust-bench >&2
BENCH="$target_dir/$PROFILE/robust-bench"
SERVER="$target_dir/$PROFILE/robust-server"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
PORT=${PORT:-21997}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

p2p() {
    "$BENCH" p2p -P 20 --rate 200 -d 4 -p "$PORT" --client-prefix "$1" --quiet --json 2>/dev/null | tail -1 |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("p99 %.2f ms, p99.9 %.2f ms, loss %.2f%%" % (d["latency_ms"]["p99"], d["latency_ms"]["p999"], d["loss_pct"]))'
}

run() {
    local broker=$1 qos=$2 pid
    if [ "$broker" = mosquitto ]; then
        printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$PORT" >"$tmp/mosquitto.conf"
        "$MOSQUITTO" -c "$tmp/mosquitto.conf" >/dev/null 2>&1 &
    else
        "$SERVER" --roles mqtt --mqtt-addr "127.0.0.1:$PORT" --data-dir "$tmp/data" >"$tmp/server.log" 2>&1 &
    fi
    pid=$!
    sleep 0.5
    echo "== $broker, QoS $qos"
    echo "  p2p alone:  $(p2p alone)"
    local rss
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    "$BENCH" fanin -q "$qos" --sub-read-rate 20000 -d 10 --drain 2 -p "$PORT" --client-prefix ov \
        --quiet --json 2>/dev/null | tail -1 >"$tmp/fanin.json" &
    local fanin=$!
    sleep 3
    echo "  p2p during: $(p2p during)"
    wait "$fanin"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("  fan-in: sent %.0f/s, delivered %.0f/s, lost %.1f%%" % (d["sent_rate"], d["received_rate"], d["loss_pct"]))' "$tmp/fanin.json"
    echo "  RSS: ${rss} KiB before, peak $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") KiB"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

for qos in ${QOS:-0 1}; do
    run mosquitto "$qos"
    run robust-server "$qos"
done
