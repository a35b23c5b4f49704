#!/usr/bin/env python3
"""Crash loop: ingest and stream while `datanexus serve` is SIGKILLed again and again.

Driven by `scripts/chaos/kill-loop.sh` (which builds the binary and the Python stubs).
Every round starts `serve` on the same data directory and ports, runs two clients at
once, and SIGKILLs the server at a random moment:

- a metrics writer: `POST /metrics` batches of 100 samples of metric `chaos`, each
  sample's value unique; a batch answered 200 is acknowledged;
- a stream client (`datanexus.v1.EventStream`, client id `chaos`): `sq` events with
  unique numbers; an event answered `Accepted{seq}` is accepted; results are acked back
  and remembered by seq, and each round resumes after the last acked seq.

After each restart it checks that every acknowledged sample is stored exactly once
(values are unique, so a value seen twice would be a duplicate), and at the end that every
accepted event has its result (number squared) exactly once by seq. Exits non-zero with
the first violation; prints one summary line.

Usage: kill_loop.py BINARY DATA_DIR STUBS_DIR ROUNDS [SEED]
"""

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

BIN, DATA, STUBS, ROUNDS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
SEED = int(sys.argv[5]) if len(sys.argv) > 5 else int(time.time())
sys.path.insert(0, STUBS)

import grpc  # noqa: E402
from datanexus.v1 import stream_pb2, stream_pb2_grpc  # noqa: E402

rng = random.Random(SEED)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


GRPC, HTTP = free_port(), free_port()


def start():
    proc = subprocess.Popen(
        [BIN, "serve", "--data-dir", DATA,
         "--grpc-addr", f"127.0.0.1:{GRPC}", "--http-addr", f"127.0.0.1:{HTTP}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("datanexus listening"):
            return proc
        if proc.poll() is not None:
            sys.exit(f"serve exited with {proc.returncode} before listening")
    sys.exit("serve did not start within 60 s")


def http(method, path, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{HTTP}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


acked_values = set()      # sample values acknowledged by POST /metrics
next_value = [0]
accepted = {}             # seq -> number, events acknowledged with Accepted
results = {}              # seq -> result value, results received (deduped by seq)
duplicate_deliveries = [0]
acked_seq = [0]           # the highest result seq this client acked
next_number = [1]
lock = threading.Lock()


def write_metrics(stop):
    while not stop.is_set():
        with lock:
            first = next_value[0]
            next_value[0] += 100
        batch = [{"metric_name": "chaos", "value": float(v), "labels": {"w": "1"},
                  "timestamp": 1_700_000_000 + v} for v in range(first, first + 100)]
        try:
            http("POST", "/metrics", batch)
        except Exception:
            return  # the server is gone; unacknowledged batches may or may not be stored
        with lock:
            acked_values.update(range(first, first + 100))
        time.sleep(0.01)


def stream(stop, send_events=True):
    """One stream until `stop` is set or the server goes away."""
    channel = grpc.insecure_channel(f"127.0.0.1:{GRPC}")
    stub = stream_pb2_grpc.EventStreamStub(channel)
    outgoing = queue.Queue()
    outgoing.put(stream_pb2.StreamRequest(
        hello=stream_pb2.Hello(client_id="chaos", resume_after=acked_seq[0])))

    def requests():
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item

    pending = {}  # correlation id -> number
    call = stub.Stream(requests())

    def feed():
        while send_events and not stop.is_set():
            with lock:
                c = next_number[0]
                next_number[0] += 1
                n = c % 40_000 + 1  # its square fits an int32
                pending[c] = n
            outgoing.put(stream_pb2.StreamRequest(
                event=stream_pb2.Event(event_name="sq", number=n, correlation_id=c)))
            time.sleep(0.002)
        stop.wait()
        call.cancel()
        outgoing.put(None)

    threading.Thread(target=feed, daemon=True).start()
    try:
        for response in call:
            kind = response.WhichOneof("kind")
            with lock:
                if kind == "accepted":
                    a = response.accepted
                    accepted[a.seq] = pending.pop(a.correlation_id)
                elif kind == "result":
                    r = response.result
                    if r.seq in results:
                        duplicate_deliveries[0] += 1
                    results[r.seq] = (r.number, r.result)
                    acked_seq[0] = max(acked_seq[0], r.seq)
                    outgoing.put(stream_pb2.StreamRequest(ack=r.seq))
    except grpc.RpcError:
        pass  # the server is gone, or we cancelled
    finally:
        stop.set()
        channel.close()


def stored_values():
    values, offset = [], 0
    while True:
        page = http("GET", f"/metrics/chaos?limit=100000&offset={offset}")
        values.extend(page["values"])
        offset += len(page["values"])
        if offset >= page["total"] or not page["values"]:
            return values


def check_samples(round_, timeout=120):
    """Every acknowledged sample is stored exactly once (waiting for the pipeline to
    replay the log after a restart)."""
    deadline = time.time() + timeout
    while True:
        try:
            values = [int(v) for v in stored_values()]
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
            values = []
        seen = set()
        for v in values:
            if v in seen:
                sys.exit(f"round {round_}: sample {v} stored twice")
            seen.add(v)
        missing = acked_values - seen
        if not missing:
            return
        if time.time() > deadline:
            sys.exit(f"round {round_}: {len(missing)} acknowledged samples missing, "
                     f"e.g. {sorted(missing)[:5]}")
        time.sleep(0.2)


def main():
    print(f"kill loop: {ROUNDS} rounds, seed {SEED}", file=sys.stderr)
    for round_ in range(1, ROUNDS + 1):
        proc = start()
        check_samples(round_)
        stop = threading.Event()
        clients = [threading.Thread(target=f, args=(stop,)) for f in (write_metrics, stream)]
        for c in clients:
            c.start()
        time.sleep(rng.uniform(0.2, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for c in clients:
            c.join(30)
        print(f"round {round_}: killed; {len(acked_values)} samples acknowledged, "
              f"{len(accepted)} events accepted, {len(results)} results", file=sys.stderr)
    # A last run without a kill: every accepted event's result arrives.
    proc = start()
    check_samples(ROUNDS + 1)
    stop = threading.Event()
    drain = threading.Thread(target=stream, args=(stop, False))
    drain.start()
    deadline = time.time() + 120
    while time.time() < deadline:
        with lock:
            if all(s in results for s in accepted):
                break
        time.sleep(0.1)
    stop.set()
    drain.join(30)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    missing = [s for s in accepted if s not in results]
    if missing:
        sys.exit(f"{len(missing)} accepted events without a result, e.g. seqs {sorted(missing)[:5]}")
    wrong = [s for s, n in accepted.items() if results[s] != (n, n * n)]
    if wrong:
        sys.exit(f"{len(wrong)} results do not answer their event, e.g. seq {wrong[0]}")
    print(json.dumps({
        "rounds": ROUNDS, "seed": SEED, "samples_acknowledged": len(acked_values),
        "samples_missing": 0, "samples_duplicated": 0, "events_accepted": len(accepted),
        "results_missing": 0, "results_delivered_again_after_a_kill": duplicate_deliveries[0],
        # Events made durable whose `Accepted` a kill cut off: their results arrive too.
        "results_of_events_not_seen_accepted": len([s for s in results if s not in accepted]),
    }))


main()
