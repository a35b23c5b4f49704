#!/usr/bin/env bash
# Data Nexus next to VictoriaMetrics and InfluxDB 1.x on the same machine, same workload.
#
# What it does, one system at a time (so the servers never compete for the CPUs; the
# load generator does share the machine with each of them alike):
#   1. starts the server on free loopback ports, its data in a temp dir;
#   2. sends the IDENTICAL InfluxDB line-protocol workload with one load generator,
#      `datanexus bench --workload line-protocol` (POST /write?precision=ns): SERIES
#      series x POINTS points (default 10,000 x 100 = 1 M samples), measurement `bench`,
#      tags `run` and `series`, field `value`, explicit timestamps 10 s apart ending now,
#      BATCH lines a request (5,000) over CONNECTIONS keep-alive connections (4);
#   3. checks the system stored every sample with its own count query
#      (VictoriaMetrics: /internal/force_flush, then sum(count_over_time(bench_value[..]));
#      InfluxDB: SELECT count(value) FROM bench; Data Nexus: GET /metrics/bench/aggregate);
#   4. times the same all-series aggregate, p99 + mean + count over every sample
#      (QUERY_RUNS runs, the median is reported):
#        VictoriaMetrics  histogram_quantile(0.99, sum(histogram_over_time(bench_value[..])) by (vmrange)),
#                         sum(sum_over_time(..)) / sum(count_over_time(..)), sum(count_over_time(..))
#                         in one union() query (its quantile is bucketed, the others' exact);
#                         started with -search.disableCache so repeats are not served from
#                         its result cache, and -search.latencyOffset=0s so the newest
#                         samples are visible at once;
#        InfluxDB         SELECT PERCENTILE(value, 99), MEAN(value), COUNT(value) FROM bench;
#        Data Nexus       GET /metrics/bench/aggregate (count, mean, p50, p90, p99);
#   5. reads the peak RSS (VmHWM) of the server process, stops it gracefully (each one
#      flushes on shutdown) and divides the bytes its data dir occupies on disk (`du`,
#      allocated blocks: InfluxDB preallocates sparse series files) by the samples, also
#      printed per top-level directory. InfluxDB gets
#      cache-snapshot-write-cold-duration = "1s" and the script waits (up to 60 s) for
#      its WAL to be snapshotted into TSM files first, so its size is of TSM, not WAL.
#      Data Nexus' data dir holds the durable log (every record as received, kept until
#      broker retention) and the columnar store; both are counted, and printed apart.
#
# Durability differs. Data Nexus runs with its default broker.fsync = "always": a write
# is acknowledged only after its log was fsynced. VictoriaMetrics acknowledges BEFORE
# fsync: samples wait in memory and are written and fsynced as parts about every
# second (strace during a run: ~28 fsyncs for 20 write requests, none tied to a
# request; a crash can lose the last seconds). InfluxDB 1.6 does NOT ack before fsync
# with its defaults (wal-fsync-delay = "0s"): each write is fsynced to its WAL before
# the answer, concurrent writes sharing an fsync (strace: 18 fsyncs for 20 requests).
# The footnotes print InfluxDB's effective wal-fsync-delay.
#
# Usage: scripts/bench/compare.sh [--series N] [--points N] [--connections N]
#                                 [--batch N] [--query-runs N] [--keep]
# or the same as environment variables: SERIES, POINTS, CONNECTIONS, BATCH, QUERY_RUNS,
# KEEP=1 (keep the temp dir). BENCH_BIN=<path> uses that binary instead of
# building `cargo build --release -p datanexus` (into CARGO_TARGET_DIR, default
# $HOME/.cache/datanexus-target). Installs victoria-metrics and influxdb with apt-get
# when missing (Debian bookworm: VictoriaMetrics 1.79, InfluxDB 1.6).
set -euo pipefail

SERIES=${SERIES:-10000}
POINTS=${POINTS:-100}
CONNECTIONS=${CONNECTIONS:-4}
BATCH=${BATCH:-5000}
QUERY_RUNS=${QUERY_RUNS:-5}
KEEP=${KEEP:-0}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --series) SERIES=$2; shift 2 ;;
        --points) POINTS=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --query-runs) QUERY_RUNS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for n in SERIES POINTS CONNECTIONS BATCH QUERY_RUNS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || { echo "$n must be a positive integer, not '${!n}'" >&2; exit 2; }
done
TOTAL=$((SERIES * POINTS))
INTERVAL_S=10
# Every query window covers all samples: POINTS intervals back from now, plus an hour.
WINDOW_S=$((POINTS * INTERVAL_S + 3600))

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HELPER="$HERE/compare.py"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/datanexus-target}

log() { printf '== %s\n' "$*" >&2; }

# --- tools ----------------------------------------------------------------------------
APT_UPDATED=0
install_if_missing() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (apt-get)"
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
install_if_missing curl curl
install_if_missing python3 python3
install_if_missing victoria-metrics victoria-metrics
install_if_missing influxd influxdb

if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN
else
    log "building datanexus (release)"
    (cd "$ROOT" && cargo build --release -p datanexus)
    BIN=$CARGO_TARGET_DIR/release/datanexus
fi
[ -x "$BIN" ] || { echo "no datanexus binary at $BIN" >&2; exit 1; }

# --- processes ------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/datanexus-compare.XXXXXX")
PIDS=()

# Stops one server we started: SIGTERM, up to 60 s for a graceful exit, then SIGKILL;
# forgets its pid (so cleanup never signals a reused pid).
stop_pid() {
    local pid=$1 i rest=()
    for i in "${PIDS[@]}"; do [ "$i" = "$pid" ] || rest+=("$i"); done
    PIDS=("${rest[@]}")
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 600); do
        if ! kill -0 "$pid" 2>/dev/null || grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "$KEEP" = 1 ]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url what
    local i
    for i in $(seq 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$2 did not answer $1 within 30 s; its log:" >&2
    cat "$WORK/$2.log" >&2 || true
    exit 1
}

free_ports() { python3 "$HELPER" ports "$1" | tr '\n' ' '; }
peak_rss_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# --- the measurement ------------------------------------------------------------------
# Sends the workload to $1 (system) at $2 (host:port), extra bench flags after.
ingest() {
    local system=$1 addr=$2
    shift 2
    log "$system: ingesting $TOTAL samples ($SERIES series x $POINTS points, batches of $BATCH, $CONNECTIONS connections)"
    if ! "$BIN" bench --workload line-protocol --http-addr "$addr" --metrics "$TOTAL" \
        --series "$SERIES" --batch "$BATCH" --clients "$CONNECTIONS" --interval "${INTERVAL_S}s" \
        --duration 1h --no-verify --format json "$@" >"$WORK/$system.bench.json"; then
        echo "$system: the load generator failed:" >&2
        cat "$WORK/$system.bench.json" >&2
        exit 1
    fi
}

# Polls the count command ($2…) until it prints $TOTAL (5 min at most).
verify_count() {
    local system=$1 n=0 i
    shift
    for i in $(seq 1500); do
        n=$("$@" | python3 "$HELPER" count "$system")
        [ "$n" -ge "$TOTAL" ] && break
        sleep 0.2
    done
    if [ "$n" -ne "$TOTAL" ]; then
        echo "$system stored $n of $TOTAL samples" >&2
        exit 1
    fi
    log "$system: all $n samples counted"
}

# Times GET $3 on $2 QUERY_RUNS times; keeps one answer ($4: the same query by curl).
time_query() {
    local system=$1 addr=$2 path=$3
    curl -fsS "http://$addr$path" >"$WORK/$system.answer.json"
    python3 "$HELPER" answer "$system" <"$WORK/$system.answer.json" >"$WORK/$system.answer.txt"
    "$BIN" bench --workload query --http-addr "$addr" --query-path "$path" \
        --queries "$QUERY_RUNS" --clients 1 --duration 1h --format json >"$WORK/$system.query.json"
    log "$system: query median $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["latency_ms"]["p50"])' "$WORK/$system.query.json") ms; $(cat "$WORK/$system.answer.txt")"
}

# Writes the record of $1 (system): $2 = pid (for the RSS), $3 = data dir (after stop).
finish() {
    local system=$1 pid=$2 dir=$3 rss bytes
    rss=$(peak_rss_kb "$pid")
    stop_pid "$pid"
    # Allocated bytes, not apparent sizes: InfluxDB preallocates sparse 4 MiB series files.
    bytes=$(du -s --block-size=1 "$dir" | cut -f1)
    du -s --block-size=1 "$dir"/* | awk -v n="$TOTAL" -v d="$dir/" '
        { sub(d, "", $2); if ($1 > 0) parts = parts sprintf("%s%s %.2f", sep, $2, $1 / n); sep = ", " }
        END { print parts }' >"$WORK/$system.disk.txt"
    python3 "$HELPER" record system="$system" samples="$TOTAL" rss_kb="$rss" bytes="$bytes" \
        bench_file="$WORK/$system.bench.json" query_file="$WORK/$system.query.json" \
        >"$WORK/$system.record.json"
}

run_victoria_metrics() {
    local port dir pid addr q p99 avg cnt
    port=$(free_ports 1)
    port=${port// /}
    dir=$WORK/victoria-metrics
    addr=127.0.0.1:$port
    log "victoria-metrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || true) on $addr"
    victoria-metrics -httpListenAddr "$addr" -storageDataPath "$dir" -retentionPeriod 100y \
        -search.disableCache -search.latencyOffset 0s >"$WORK/victoria-metrics.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://$addr/health" victoria-metrics
    ingest victoria-metrics "$addr"
    vm_count() {
        curl -fsS "http://$addr/internal/force_flush" >/dev/null
        curl -fsS --get "http://$addr/api/v1/query" --data-urlencode "time=$(date +%s)" \
            --data-urlencode "query=sum(count_over_time(bench_value[${WINDOW_S}s]))"
    }
    verify_count victoria-metrics vm_count
    cnt="sum(count_over_time(bench_value[${WINDOW_S}s]))"
    avg="sum(sum_over_time(bench_value[${WINDOW_S}s])) / $cnt"
    p99="histogram_quantile(0.99, sum(histogram_over_time(bench_value[${WINDOW_S}s])) by (vmrange))"
    q="union(label_set($p99, \"stat\", \"p99\"), label_set($avg, \"stat\", \"avg\"), label_set($cnt, \"stat\", \"count\"))"
    time_query victoria-metrics "$addr" \
        "/api/v1/query?time=$(date +%s)&query=$(python3 "$HELPER" urlencode "$q")"
    finish victoria-metrics "$pid" "$dir"
}

run_influxdb() {
    local http rpc dir pid addr q i wal
    read -r http rpc <<<"$(free_ports 2)"
    dir=$WORK/influxdb
    addr=127.0.0.1:$http
    mkdir -p "$dir"
    cat >"$WORK/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "1s"
[http]
  enabled = true
  bind-address = "$addr"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
EOF
    log "influxdb $(influxd version 2>&1 | head -1) on $addr"
    influxd -config "$WORK/influxdb.conf" >"$WORK/influxdb.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://$addr/ping" influxdb
    curl -fsS -XPOST "http://$addr/query" --data-urlencode 'q=CREATE DATABASE bench' >/dev/null
    ingest influxdb "$addr" --db bench
    influx_count() {
        curl -fsS --get "http://$addr/query" --data-urlencode db=bench \
            --data-urlencode 'q=SELECT count(value) FROM bench'
    }
    verify_count influxdb influx_count
    q='SELECT PERCENTILE(value, 99), MEAN(value), COUNT(value) FROM bench'
    time_query influxdb "$addr" "/query?db=bench&q=$(python3 "$HELPER" urlencode "$q")"
    # Let the cache snapshot into TSM files (the WAL segments are then removed).
    for i in $(seq 600); do
        wal=$(find "$dir/wal" -name '*.wal' -size +0c 2>/dev/null | wc -l)
        [ "$wal" -eq 0 ] && break
        sleep 0.1
    done
    INFLUX_WAL_LEFT=$wal
    finish influxdb "$pid" "$dir"
}

run_datanexus() {
    local http grpc dir pid addr
    read -r http grpc <<<"$(free_ports 2)"
    dir=$WORK/datanexus
    addr=127.0.0.1:$http
    log "datanexus $("$BIN" --version) on $addr"
    "$BIN" serve --data-dir "$dir" --http-addr "$addr" --grpc-addr "127.0.0.1:$grpc" \
        --log-level warn >"$WORK/datanexus.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://$addr/health" datanexus
    ingest datanexus "$addr"
    dn_count() {
        # 404 (no such metric yet) counts as 0.
        curl -sS "http://$addr/metrics/bench/aggregate" | grep '"count"' || true
    }
    verify_count datanexus dn_count
    time_query datanexus "$addr" "/metrics/bench/aggregate"
    finish datanexus "$pid" "$dir"
}

INFLUX_WAL_LEFT=unknown
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
run_victoria_metrics
run_influxdb
run_datanexus

echo
echo "$TOTAL samples ($SERIES series x $POINTS points), line protocol, batches of $BATCH lines," \
    "$CONNECTIONS connections; query: median of $QUERY_RUNS runs"
echo "$(nproc) CPUs; load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)" \
    "(other work on the machine skews every number)"
echo
python3 "$HELPER" table "$WORK"/victoria-metrics.record.json "$WORK"/influxdb.record.json \
    "$WORK"/datanexus.record.json
echo
for s in victoria-metrics influxdb datanexus; do
    echo "$s query answer: $(cat "$WORK/$s.answer.txt")"
done
for s in victoria-metrics influxdb datanexus; do
    echo "$s bytes/sample by directory: $(cat "$WORK/$s.disk.txt")"
done
echo "(datanexus log/ keeps every record as received until broker retention; store/ is the" \
    "columnar copy that queries read)"
echo "influxdb: WAL segments left unsnapshotted at stop: $INFLUX_WAL_LEFT;" \
    "$(influxd config -config "$WORK/influxdb.conf" 2>/dev/null | grep -m1 'wal-fsync-delay' | sed 's/^ *//')"
echo "durability: datanexus acks after fsync (broker.fsync=always); influxdb acks after its WAL" \
    "fsync (wal-fsync-delay 0s); victoria-metrics acks before its samples are written or fsynced"
