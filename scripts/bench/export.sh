#!/usr/bin/env bash
# Export throughput, same machine, same run: InfluxDB 1.x → Kafka and the own store →
# Kafka with `datanexus export` / `POST /exports`, beside the yardsticks — InfluxDB's own
# read speed (the same chunked SELECT, answer discarded), the same export to an NDJSON
# file, and a plain librdkafka producer sending the same JSON records to the same broker.
#
# Starts on free loopback ports: influxd (Debian's influxdb), tansu (in-memory Kafka;
# ~/.cache/datanexus-tools/tansu or TANSU_BIN, as .ci/run installs it) and a
# `datanexus serve` (embedded store). Writes SERIES x POINTS points (default 100 x
# 10,000 = 1,000,000) of `cpu,host=hN usage=…,n=…i` to both with line protocol, then
# for each run makes a fresh 6-partition topic and prints records/s.
#
# Usage: scripts/bench/export.sh [--series N] [--points N]
# EXPORT_WRAP='perf record -g -o FILE' runs the InfluxDB export under a profiler.
set -euo pipefail

SERIES=${SERIES:-100}
POINTS=${POINTS:-10000}
while [ $# -gt 0 ]; do
    case "$1" in
        --series) SERIES=$2; shift 2 ;;
        --points) POINTS=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
TOTAL=$((SERIES * POINTS))

cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datanexus-target}"
cargo build --release -p datanexus --features kafka >&2
cargo build --release -p datanexus-export --features kafka --example plain_producer >&2
BIN="$CARGO_TARGET_DIR/release/datanexus"
PLAIN="$CARGO_TARGET_DIR/release/examples/plain_producer"
TANSU="${TANSU_BIN:-$HOME/.cache/datanexus-tools/tansu}"
[ -x "$TANSU" ] || { echo "no tansu at $TANSU (bash .ci/run installs it)" >&2; exit 1; }
command -v influxd >/dev/null || { echo "no influxd (apt-get install influxdb)" >&2; exit 1; }

. scripts/bench/common.sh

influx_port=$(free_port); influx_rpc=$(free_port); kafka_port=$(free_port)
http_port=$(free_port); grpc_port=$(free_port)
mkdir -p "$work/influx" "$work/dn"
cat >"$work/influx.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$influx_rpc"
[meta]
  dir = "$work/influx/meta"
[data]
  dir = "$work/influx/data"
  wal-dir = "$work/influx/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$influx_port"
  log-enabled = false
  max-row-limit = 0
[monitor]
  store-enabled = false
CONF
influxd -config "$work/influx.conf" >"$work/influx.log" 2>&1 & pids+=($!)
"$TANSU" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 & pids+=($!)
"$BIN" serve --data-dir "$work/dn" --http-addr "127.0.0.1:$http_port" \
    --grpc-addr "127.0.0.1:$grpc_port" --log-level warn >"$work/dn.out" 2>"$work/dn.err" & pids+=($!)
wait_port "$influx_port"; wait_port "$kafka_port"; wait_port "$http_port"
influx="http://127.0.0.1:$influx_port"
dn="http://127.0.0.1:$http_port"
brokers="127.0.0.1:$kafka_port"
curl -fsS -XPOST "$influx/query" --data-urlencode 'q=CREATE DATABASE bench' >/dev/null

echo "== writing $TOTAL points ($SERIES series x $POINTS) to InfluxDB and to datanexus" >&2
python3 - "$SERIES" "$POINTS" "$influx/write?db=bench" "$dn/write" <<'PY'
import sys, urllib.request
series, points, *urls = sys.argv[1], sys.argv[2], *sys.argv[3:]
series, points = int(series), int(points)
batch = []
def flush():
    body = "".join(batch).encode()
    for url in urls:
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST")).read()
    batch.clear()
i = 0
for t in range(points):
    for s in range(series):
        batch.append(f"cpu,host=h{s} usage={i}.25,n={i}i {(1_600_000_000 + t) * 1_000_000_000}\n")
        i += 1
        if len(batch) == 50_000:
            flush()
if batch:
    flush()
PY
# Wait until datanexus's store has every point (the pipeline is asynchronous).
for _ in $(seq 1 600); do
    n=$(curl -fsS "$dn/metrics/cpu/aggregate?field=n" | python3 -c 'import sys, json; print(json.load(sys.stdin)["count"])')
    [ "$n" = "$TOTAL" ] && break
    sleep 0.5
done

# A 6-partition topic named $1.
new_topic() {
    python3 - "$brokers" "$1" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
for f in a.create_topics([NewTopic(sys.argv[2], 6, 1)]).values():
    f.result()
PY
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== InfluxDB's own read speed: the chunked SELECT * of the measurement, discarded"
start=$(date +%s.%N)
curl -fsS -G "$influx/query" --data-urlencode 'db=bench' --data-urlencode 'q=SELECT * FROM cpu' \
    --data-urlencode 'epoch=ns' --data-urlencode 'chunked=true' --data-urlencode 'chunk_size=10000' >/dev/null
end=$(date +%s.%N)
python3 -c "print(f'influxdb read: {$TOTAL} rows in {$end - $start:.2f} s = {$TOTAL / ($end - $start):,.0f} rows/s')"

echo "== InfluxDB → Kafka: datanexus export (6 workers, 48 chunks, JSON records)"
t=from-influx; new_topic "$t"
${EXPORT_WRAP:-} "$BIN" export --connection "$influx" --database bench --table cpu --to "kafka://$brokers/$t" 2>/dev/null \
    | grep -E '^(rows|seconds|rows/s) '

echo "== the own store → Kafka: POST /exports (a datanexus connection, JSON records)"
t=from-store; new_topic "$t"
curl -fsS -XPOST "$dn/db-connections/register" -H 'Content-Type: application/json' \
    -d '{"connection_id": "own", "db_type": "datanexus"}' >/dev/null
job=$(curl -fsS -XPOST "$dn/exports" -H 'Content-Type: application/json' \
    -d "{\"connection_id\": \"own\", \"table\": \"cpu\", \"kafka_brokers\": \"$brokers\", \"send_topic\": \"$t\"}" \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["job_id"])')
while :; do
    status=$(curl -fsS "$dn/exports/$job")
    state=$(echo "$status" | python3 -c 'import sys, json; print(json.load(sys.stdin)["state"])')
    [ "$state" != running ] && break
    sleep 0.2
done
echo "$status" | python3 -c 'import sys, json; s = json.load(sys.stdin); print("%s: rows %d in %.2f s = %.0f rows/s" % (s["state"], s["rows"], s["elapsed_seconds"], s["rows_per_second"]))'

echo "== InfluxDB → an NDJSON file, datanexus export (the same records, no Kafka)"
"$BIN" export --connection "$influx" --database bench --table cpu --to "$work/cpu.ndjson" 2>/dev/null \
    | grep -E '^(rows|seconds|rows/s) '
echo "== a plain librdkafka producer of the same JSON records (read from that file first)"
t=plain; new_topic "$t"
"$PLAIN" "$brokers" "$t" "$work/cpu.ndjson" host 6
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
