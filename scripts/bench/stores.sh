#!/usr/bin/env bash
# The embedded store next to the PostgreSQL store, same machine, same run, same workload.
#
# For each store, one at a time: starts `datanexus serve` (fsync = always) on free
# loopback ports with the store, sends SERIES x POINTS samples of InfluxDB line protocol
# with `datanexus bench --workload line-protocol` (BATCH lines a request, CONNECTIONS
# connections) and reports what the bench measures: samples/s acknowledged and the time
# until a count query sees every sample (ingest-to-queryable); then times QUERIES runs of
# the aggregate with p50/p90/p99 over every sample (`--workload query`).
#
# PostgreSQL: POSTGRES_URL names a database to use (it should be empty); without it the
# script starts a private cluster (initdb in a temp dir, Debian's defaults: shared_buffers
# 128 MB, fsync on, synchronous_commit on), as the postgres user when run as root.
#
# Usage: scripts/bench/stores.sh [--series N] [--points N] [--connections N] [--batch N]
#                                [--queries N]
# BENCH_BIN=<path> uses that binary instead of `cargo build --release -p datanexus`.
set -euo pipefail

SERIES=${SERIES:-10000}
POINTS=${POINTS:-100}
CONNECTIONS=${CONNECTIONS:-4}
BATCH=${BATCH:-5000}
QUERIES=${QUERIES:-10}
while [ $# -gt 0 ]; do
    case "$1" in
        --series) SERIES=$2; shift 2 ;;
        --points) POINTS=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --queries) QUERIES=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
TOTAL=$((SERIES * POINTS))

cd "$(dirname "$0")/../.."
if [ -z "${BENCH_BIN:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datanexus-target}"
    cargo build --release -p datanexus >&2
    BENCH_BIN="$CARGO_TARGET_DIR/release/datanexus"
fi

work="$(mktemp -d)"
chmod 755 "$work"  # the postgres user (a private cluster under root) walks into it
server_pid=""
pg_stop=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    [ -n "$pg_stop" ] && eval "$pg_stop" || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [ -z "${POSTGRES_URL:-}" ]; then
    initdb="$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1)"
    [ -n "$initdb" ] || { echo "no PostgreSQL installed (apt-get install postgresql) and no POSTGRES_URL" >&2; exit 1; }
    pg_bin="$(dirname "$initdb")"
    mkdir -p "$work/pg"
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$work/pg"
        pg_run() { runuser -u postgres -- "$@"; }
    else
        pg_run() { "$@"; }
    fi
    pg_port="$(free_port)"
    pg_run "$pg_bin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
    pg_run "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
        -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
    pg_stop="pg_run '$pg_bin/pg_ctl' -D '$work/pg/data' -m fast -w stop >/dev/null"
    POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
fi

run() {
    local name=$1; shift
    local grpc http
    grpc="$(free_port)"; http="$(free_port)"
    mkdir -p "$work/$name"
    "$BENCH_BIN" serve --data-dir "$work/$name" --grpc-addr "127.0.0.1:$grpc" \
        --http-addr "127.0.0.1:$http" --log-level warn "$@" >"$work/$name.out" 2>"$work/$name.err" &
    server_pid=$!
    for _ in $(seq 1 200); do
        grep -q "datanexus listening" "$work/$name.out" 2>/dev/null && break
        sleep 0.05
    done
    grep -q "datanexus listening" "$work/$name.out" || { cat "$work/$name.err" >&2; exit 1; }
    echo "== $name: line protocol, $SERIES series x $POINTS points, $CONNECTIONS connections, batches of $BATCH"
    "$BENCH_BIN" bench --workload line-protocol --clients "$CONNECTIONS" --batch "$BATCH" \
        --metrics "$TOTAL" --series "$SERIES" --http-addr "127.0.0.1:$http" 2>/dev/null
    echo "== $name: aggregate with p50/p90/p99 over all $TOTAL samples, $QUERIES queries"
    "$BENCH_BIN" bench --workload query --queries "$QUERIES" --clients 1 --http-addr "127.0.0.1:$http" 2>/dev/null
    kill "$server_pid"; wait "$server_pid" || true
    server_pid=""
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
run embedded
run postgres --store "$POSTGRES_URL"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
