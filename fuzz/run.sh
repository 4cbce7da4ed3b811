#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, from its committed seeds, as many at once as there are cores; fails
# when any target finds a crash. `fuzz/run.sh --build` only builds them.
# Stable Rust runs without a sanitizer; with RUSTC_BOOTSTRAP=1 the targets get AddressSanitizer.
set -eu

seconds=${1:?usage: fuzz/run.sh SECONDS | --build}
cd "$(dirname "$0")/.."
if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is missing: run cargo install cargo-fuzz --locked"
    exit 1
fi
if [ "${RUSTC_BOOTSTRAP:-}" = 1 ]; then
    sanitizer=()
else
    sanitizer=(--sanitizer none)
fi
# Debug assertions so that an arithmetic overflow is a crash too.
flags=("${sanitizer[@]}" --debug-assertions)

targets=$(cargo fuzz list)
# One build for all targets, before the clock of any run starts.
cargo fuzz build "${flags[@]}"
[ "$seconds" != --build ] || exit 0

logs=fuzz/artifacts/logs
mkdir -p "$logs"
jobs=$(nproc)

fuzz_one() {
    local target=$1 log="$logs/$1.log"
    mkdir -p "fuzz/corpus/$target"
    cp fuzz/seeds/"$target"/* "fuzz/corpus/$target/"
    echo "fuzzing $target for $seconds s (log: $log)"
    # The target runs on the main thread: give it the stack of a tokio worker, so deep recursion crashes here too.
    if (ulimit -s 2048 && cargo fuzz run "${flags[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1) >"$log" 2>&1; then
        rm -f "$logs/$target.failed"
    else
        touch "$logs/$target.failed"
    fi
}

running=0
for target in $targets; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$target" &
    running=$((running + 1))
done
wait

failed=()
for target in $targets; do
    log="$logs/$target.log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    printf '%-14s %12s runs %8s exec/s\n' "$target" "${runs:-?}" "${rate:-?}"
    if [ -e "$logs/$target.failed" ]; then
        tail -n 40 "$log"
        echo "$target crashed: the input is in fuzz/artifacts/$target/; replay it with cargo fuzz run $target <file>"
        failed+=("$target")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]}; keep the reduced input as fuzz/seeds/<target>/regress-<name> once fixed"
    exit 1
fi
