#!/usr/bin/env bash
# Runs issue 6's matrix against Mosquitto and robust-server (release
# builds, free ports on 127.0.0.1, alternating order per row) and writes
# the table into docs/benchmarks.md, section
# "## MQTT broker vs Mosquitto (robust-bench)".
#
#   loadtest/compare.sh                 # 10 s per row
#   loadtest/compare.sh --seconds 5     # any `robust-bench compare` option
#   loadtest/compare.sh --rows p2p,conn --no-write
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    apt-get install -y mosquitto
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

cargo build --release --bin robust-server --bin robust-bench
target_dir=${CARGO_TARGET_DIR:-target}
exec "$target_dir/release/robust-bench" compare \
    --robust-server "$target_dir/release/robust-server" \
    --mosquitto "$MOSQUITTO" \
    "$@"
