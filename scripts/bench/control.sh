#!/usr/bin/env bash
# The control node on this machine: ingest through a control node over WORKERS worker
# nodes against ingest straight into one node, same load generator, same run; then the
# aggregate query latency (count, sum, quantiles over every sample) through a control
# node over 1, 2 and 3 workers holding the same data. Every process on loopback, release
# build, embedded stores, fsync always.
#
# Usage: scripts/bench/control.sh [--metrics N] [--series N] [--queries N]
set -euo pipefail

METRICS=${METRICS:-1000000}
SERIES=${SERIES:-10000}
QUERIES=${QUERIES:-50}
while [ $# -gt 0 ]; do
    case "$1" in
        --metrics) METRICS=$2; shift 2 ;;
        --series) SERIES=$2; shift 2 ;;
        --queries) QUERIES=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datanexus-target}"
[ -n "${NO_BUILD:-}" ] || cargo build --release -p datanexus >&2
BIN="$CARGO_TARGET_DIR/release/datanexus"

. scripts/bench/common.sh

# serve NAME [flags…]: starts a server on free ports; sets $http and $grpc.
serve() {
    local name=$1; shift
    http=$(free_port); grpc=$(free_port)
    "$BIN" serve --data-dir "$work/$name" --http-addr "127.0.0.1:$http" \
        --grpc-addr "127.0.0.1:$grpc" --log-level warn "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    wait_port "$http"
}

# ingest LABEL HTTP GRPC: the line-protocol workload, counted until queryable.
ingest() {
    echo "== $1"
    "$BIN" bench --workload line-protocol --http-addr "127.0.0.1:$2" --grpc-addr "127.0.0.1:$3" \
        --clients 4 --batch 5000 --metrics "$METRICS" --series "$SERIES" --duration 10m 2>/dev/null
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
serve single; single_http=$http; ingest "one node, directly" "$http" "$grpc"
workers=()
for i in 1 2 3; do serve "w$i"; workers+=("http://127.0.0.1:$http"); done
nodes=$(IFS=,; echo "${workers[*]}")
serve control3 --role control --nodes "$nodes"; c3_http=$http
ingest "control node over 3 workers" "$c3_http" "$grpc"

# Aggregate latency: the same data on 1, 2 and 3 workers (the 3 above hold it; for 1
# and 2, control nodes over fresh workers get the same load first).
query() {
    echo "== aggregate through a control node over $1 worker(s)"
    "$BIN" bench --workload query --http-addr "127.0.0.1:$2" --queries "$QUERIES" --clients 1 \
        --query-path '/metrics/bench/aggregate?quantiles=0.5,0.99' 2>/dev/null
}
for n in 1 2; do
    list=()
    for i in $(seq 1 "$n"); do serve "q$n-w$i"; list+=("http://127.0.0.1:$http"); done
    serve "control$n" --role control --nodes "$(IFS=,; echo "${list[*]}")"
    "$BIN" bench --workload line-protocol --http-addr "127.0.0.1:$http" --clients 4 --batch 5000 \
        --metrics "$METRICS" --series "$SERIES" --duration 10m >/dev/null 2>&1
    query "$n" "$http"
done
query 3 "$c3_http"
echo "== aggregate on one node directly"
"$BIN" bench --workload query --http-addr "127.0.0.1:$single_http" \
    --queries "$QUERIES" --clients 1 --query-path '/metrics/bench/aggregate?quantiles=0.5,0.99' 2>/dev/null
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
