#!/usr/bin/env bash
# Crash loop: `datanexus serve` is SIGKILLed N times at random moments while a metrics
# writer (POST /metrics) and a stream client (datanexus.v1.EventStream) run; after each
# restart every acknowledged sample must be stored exactly once, and at the end every
# accepted event must have its result, exactly once by seq. See scripts/chaos/kill_loop.py.
#
# Usage: scripts/chaos/kill-loop.sh N [SEED]
# Needs python3 with grpcio and grpcio-tools. BENCH_BIN=<path> uses that binary instead
# of `cargo build --release -p datanexus`.
set -euo pipefail

ROUNDS=${1:?usage: kill-loop.sh N [SEED]}
SEED=${2:-}
cd "$(dirname "$0")/../.."
if [ -z "${BENCH_BIN:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datanexus-target}"
    cargo build --release -p datanexus >&2
    BENCH_BIN="$CARGO_TARGET_DIR/release/datanexus"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/stubs" "$work/data"
python3 -m grpc_tools.protoc -I crates/proto/proto \
    --python_out="$work/stubs" --grpc_python_out="$work/stubs" datanexus/v1/stream.proto
touch "$work/stubs/datanexus/__init__.py" "$work/stubs/datanexus/v1/__init__.py"
python3 scripts/chaos/kill_loop.py "$BENCH_BIN" "$work/data" "$work/stubs" "$ROUNDS" $SEED
