#!/usr/bin/env python3
"""Helper of compare.sh: JSON answers in, numbers and the final table out.

Subcommands (standard library only):
  ports N                       print N free loopback TCP ports, one a line
  urlencode TEXT                percent-encode TEXT for a query string
  count SYSTEM                  the sample count in a count-query answer on stdin
  answer SYSTEM                 "count=… mean=… p99=…" from a query answer on stdin
  record KEY=VALUE…             one system's results as a JSON object on stdout
  table FILE…                   the comparison table from the record files
"""

import json
import socket
import sys
import urllib.parse


def ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    for s in socks:
        print(s.getsockname()[1])
        s.close()


def influx_values(doc):
    """{column: value} of the first row of an InfluxDB 1.x /query answer."""
    result = doc["results"][0]
    if "error" in result:
        raise SystemExit(f"influxdb query failed: {result['error']}")
    series = result.get("series")
    if not series:
        return {}
    s = series[0]
    return dict(zip(s["columns"], s["values"][0]))


def vm_values(doc):
    """{stat label or "value": number} of a VictoriaMetrics /api/v1/query answer."""
    if doc.get("status") != "success":
        raise SystemExit(f"victoria-metrics query failed: {doc}")
    out = {}
    for r in doc["data"]["result"]:
        out[r["metric"].get("stat", "value")] = float(r["value"][1])
    return out


def count(system, text):
    if not text.strip():
        return 0
    doc = json.loads(text)
    if system == "victoria-metrics":
        return int(vm_values(doc).get("value", 0))
    if system == "influxdb":
        return int(influx_values(doc).get("count", 0))
    if system == "datanexus":
        return int(doc.get("count", 0))
    raise SystemExit(f"unknown system {system}")


def answer(system, text):
    doc = json.loads(text)
    if system == "victoria-metrics":
        v = vm_values(doc)
        c, mean, p99 = v.get("count"), v.get("avg"), v.get("p99")
    elif system == "influxdb":
        v = influx_values(doc)
        c, mean, p99 = v.get("count"), v.get("mean"), v.get("percentile")
    elif system == "datanexus":
        c, mean, p99 = doc.get("count"), doc.get("mean"), doc.get("p99")
    else:
        raise SystemExit(f"unknown system {system}")
    if None in (c, mean, p99):
        raise SystemExit(f"{system}: incomplete query answer: {text[:500]}")
    return f"count={int(c)} mean={mean:.4f} p99={p99:.4f}"


def record(pairs):
    rec = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key.endswith("_file"):
            with open(value) as f:
                line = f.readline()
            rec[key[: -len("_file")]] = json.loads(line)
        else:
            rec[key] = value
    print(json.dumps(rec))


def table(files):
    recs = []
    for name in files:
        with open(name) as f:
            recs.append(json.load(f))
    base = next((r for r in recs if r["system"] == "victoria-metrics"), None)
    base_rate = base["bench"]["per_s"] if base else None
    header = [
        "system",
        "samples/s",
        "vs VM",
        "p50 ms/batch",
        "p99 ms/batch",
        "query ms",
        "bytes/sample",
        "peak RSS MiB",
    ]
    rows = []
    for r in recs:
        samples = int(r["samples"])
        rate = r["bench"]["per_s"]
        rows.append(
            [
                r["system"],
                f"{rate:,.0f}",
                f"{rate / base_rate:.2f}x" if base_rate else "-",
                f"{r['bench']['latency_ms']['p50']:.1f}",
                f"{r['bench']['latency_ms']['p99']:.1f}",
                f"{r['query']['latency_ms']['p50']:.1f}",
                f"{int(r['bytes']) / samples:.2f}",
                f"{int(r['rss_kb']) / 1024:.0f}",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest])

    print(line(header))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        ports(int(args[0]))
    elif cmd == "urlencode":
        print(urllib.parse.quote(args[0], safe=""))
    elif cmd == "count":
        print(count(args[0], sys.stdin.read()))
    elif cmd == "answer":
        print(answer(args[0], sys.stdin.read()))
    elif cmd == "record":
        record(args)
    elif cmd == "table":
        table(args)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
