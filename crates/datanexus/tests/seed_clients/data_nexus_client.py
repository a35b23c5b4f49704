"""A client of the Data Nexus seed's own `data_nexus` proto, generated with grpcio-tools.

Usage: data_nexus_client.py GRPC_ADDR STUB_DIR
Ingests one metric with IngestMetric and 100 with IngestMetrics, then prints one JSON
object: {"single": id, "batch": [ids...]}. Exits non-zero on any gRPC error.
"""

import json
import sys

sys.path.insert(0, sys.argv[2])

import grpc  # noqa: E402
from data_nexus import metrics_pb2, metrics_pb2_grpc  # noqa: E402


def main() -> None:
    channel = grpc.insecure_channel(sys.argv[1])
    stub = metrics_pb2_grpc.MetricsServiceStub(channel)
    single = stub.IngestMetric(
        metrics_pb2.Metric(name="seed_py_single", value=1.5, type="gauge", timestamp=1700000000, labels={"lang": "python"})
    )
    batch = metrics_pb2.BatchMetrics(
        metrics=[
            metrics_pb2.Metric(name="seed_py_batch", value=float(i), type="COUNTER", labels={"i": str(i)})
            for i in range(100)
        ]
    )
    resp = stub.IngestMetrics(batch)
    try:
        stub.IngestMetric(metrics_pb2.Metric(name="bad name", value=1.0))
        bad = "accepted"
    except grpc.RpcError as err:
        bad = f"{err.code().name}: {err.details()}"
    print(json.dumps({"single": single.eventId, "batch": list(resp.eventIds), "bad": bad}))


if __name__ == "__main__":
    main()
