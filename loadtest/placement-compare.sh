#!/usr/bin/env bash
# Placement Center vs etcd, interleaved: for each round, for 1 and 3
# members, a fresh placement group then a fresh etcd cluster, each measured
# with `robust-bench placement` for every op and client count.
#
#   loadtest/placement-compare.sh SERVER BENCH OUT.jsonl [ROUNDS] [DURATION]
#
# SERVER is robust-server, BENCH a robust-bench built with --features etcd.
# With BASE_SERVER=PATH set, a second robust-server (say, the previous
# commit's) is measured too, as system "placement-base". One JSON line per
# run goes to OUT (with system, members, round and the load average), so
# medians can be taken afterwards.
set -u
SERVER=$1
BENCH=$2
OUT=$3
ROUNDS=${4:-3}
DURATION=${5:-10}
OPS=${OPS:-"put get"}
CLIENTS=${CLIENTS:-"16 64"}
MEMBERS=${MEMBERS:-"1 3"}
WORK=${WORK:-/tmp/placement-compare}
PIDS=()

stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    PIDS=()
}
trap stop_all EXIT

start_placement() { # members server
    local n=$1 server=$2 peers="" i
    for i in $(seq 1 "$n"); do peers+="$i = \"127.0.0.1:$((21227 + i))\", "; done
    for i in $(seq 1 "$n"); do
        mkdir -p "$WORK/p$i"
        cat > "$WORK/p$i.toml" <<EOF
node_id = $i
roles = ["placement"]
data_dir = "$WORK/p$i"

[placement]
addr = "127.0.0.1:$((21227 + i))"
peers = { ${peers%, } }
EOF
        RUST_LOG=warn "$server" --config "$WORK/p$i.toml" > "$WORK/p$i.log" 2>&1 &
        PIDS+=($!)
    done
    PADDR=$(seq -s, -f "127.0.0.1:%g" 21228 $((21227 + n)))
    sleep 2
}

start_etcd() { # members
    local n=$1 cluster="" i
    for i in $(seq 1 "$n"); do cluster+="e$i=http://127.0.0.1:$((23380 + i)),"; done
    for i in $(seq 1 "$n"); do
        etcd --name "e$i" --data-dir "$WORK/e$i" \
            --listen-client-urls "http://127.0.0.1:$((22380 + i))" \
            --advertise-client-urls "http://127.0.0.1:$((22380 + i))" \
            --listen-peer-urls "http://127.0.0.1:$((23380 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((23380 + i))" \
            --initial-cluster "${cluster%,}" --initial-cluster-state new \
            > "$WORK/e$i.log" 2>&1 &
        PIDS+=($!)
    done
    EADDR=$(seq -s, -f "http://127.0.0.1:%g" 22381 $((22380 + n)))
    sleep 3
}

run() { # system members round addr
    local sys=$1 n=$2 round=$3 addr=$4 op c load res
    for op in $OPS; do
        for c in $CLIENTS; do
            load=$(cut -d' ' -f1 /proc/loadavg)
            res=$("$BENCH" placement --target "${sys%-base}" --addr "$addr" --op "$op" \
                --clients "$c" --duration "$DURATION" --json 2>>"$WORK/bench.err")
            echo "{\"system\":\"$sys\",\"members\":$n,\"round\":$round,\"load\":$load,\"result\":${res:-null}}" >> "$OUT"
            echo "$sys n=$n r=$round $op c=$c load=$load: $res" >&2
        done
    done
}

for round in $(seq 1 "$ROUNDS"); do
    for n in $MEMBERS; do
        rm -rf "$WORK"; mkdir -p "$WORK"
        start_placement "$n" "$SERVER"
        run placement "$n" "$round" "$PADDR"
        stop_all
        if [ -n "${BASE_SERVER:-}" ]; then
            rm -rf "$WORK"; mkdir -p "$WORK"
            start_placement "$n" "$BASE_SERVER"
            run placement-base "$n" "$round" "$PADDR"
            stop_all
        fi
        rm -rf "$WORK"; mkdir -p "$WORK"
        start_etcd "$n"
        run etcd "$n" "$round" "$EADDR"
        stop_all
    done
done
