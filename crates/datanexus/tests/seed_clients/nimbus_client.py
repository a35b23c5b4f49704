"""A client of the NimbusGRPC seed's own `nimbus` proto, generated with grpcio-tools.

Usage: nimbus_client.py GRPC_ADDR STUB_DIR CLIENT_ID N
Streams `sq` for 1..N (plus one unknown event name and one overflow at the end) with
metadata client_id, reads every response, and prints one JSON object:
{"responses": [[event_name, number, result, error_or_null], ...]}.
Also checks that a stream without client_id is refused with INVALID_ARGUMENT.
"""

import json
import sys

sys.path.insert(0, sys.argv[2])

import grpc  # noqa: E402
from nimbus import nimbus_pb2, nimbus_pb2_grpc  # noqa: E402


def requests(n):
    for i in range(1, n + 1):
        yield nimbus_pb2.EventRequest(event_name="sq", number=i)
    yield nimbus_pb2.EventRequest(event_name="cube", number=2)
    yield nimbus_pb2.EventRequest(event_name="SQ", number=46341)


def error_of(resp):
    for step in reversed(resp.log.steps):
        if "error" in step.metadata:
            return step.metadata["error"]
    return None


def main() -> None:
    addr, client_id, n = sys.argv[1], sys.argv[3], int(sys.argv[4])
    channel = grpc.insecure_channel(addr)
    stub = nimbus_pb2_grpc.NimbusServiceStub(channel)
    out = []
    # A deadline, so that a missing response fails the test instead of hanging it.
    call = stub.ProcessEvent(requests(n), metadata=(("client_id", client_id),), timeout=60)
    try:
        for resp in call:
            out.append([resp.event_name, resp.number, resp.result, error_of(resp)])
            if len(out) == n + 2:
                call.cancel()
                break
    except grpc.RpcError as err:
        print(f"stream failed after {len(out)} responses: {out[-3:]}: {err}", file=sys.stderr)
        raise
    try:
        for _ in stub.ProcessEvent(requests(1), timeout=60):
            pass
        missing = "accepted"
    except grpc.RpcError as err:
        missing = err.code().name
    print(json.dumps({"responses": out, "missing_client_id": missing}), flush=True)
    # Close the channel explicitly: with a cancelled streaming call still referenced,
    # grpcio can otherwise block interpreter exit (seen about once in 30 runs).
    call = None
    channel.close()


if __name__ == "__main__":
    main()
