#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS seconds from its committed seed corpus
# (fuzz/corpus/<target>; new inputs go to a temporary directory, the repository is not
# changed) and prints libFuzzer's final stats. A crash fails the run; its input is
# saved under fuzz/artifacts/<target>/ — make it a regression test.
#
# Usage: scripts/fuzz/run-all.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1
# is set for it.
set -euo pipefail

SECONDS_PER_TARGET=${1:-30}
shift || true
cd "$(dirname "$0")/../.."
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/datanexus-target}/fuzz"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo fuzz build --fuzz-dir fuzz --target-dir "$target_dir" >&2
for target in "${targets[@]}"; do
    mkdir -p "$work/$target" "fuzz/corpus/$target"
    printf '\n-- %s, %s s\n' "$target" "$SECONDS_PER_TARGET"
    cargo fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$target" \
        "$work/$target" "fuzz/corpus/$target" \
        -- -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 2>&1 \
        | grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|Done |INFO: -max_total_time|==[0-9]+==|thread .* panicked|SUMMARY)' \
        || { echo "fuzz target $target failed" >&2; exit 1; }
done
