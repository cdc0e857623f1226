#!/usr/bin/env bash
# Fuzzing of every parser fed by a guest or a user file (docs/fuzzing.md):
#   scripts/fuzz.sh                    every target, 600 s each, one after the other
#   scripts/fuzz.sh compose 60         one target for 60 s
#   scripts/fuzz.sh all 120            every target, 120 s each
# Targets: agent_channel compose fault_plan snapshot_file image_archive.
# Needs the nightly toolchain and cargo-fuzz (installed here on first use). Each run keeps
# its corpus in fuzz/corpus/TARGET/ (only seed-* and crash-* files are committed), writes
# a crashing input to fuzz/artifacts/TARGET/ and its log to fuzz/logs/TARGET.log, and
# prints libFuzzer's final figures. It fails if a target crashed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
all=(agent_channel compose fault_plan snapshot_file image_archive)
target=${1:-all}
seconds=${2:-600}

if [ "$target" = all ]; then
    targets=("${all[@]}")
elif [[ " ${all[*]} " == *" $target "* ]]; then
    targets=("$target")
else
    echo "unknown target $target; one of: all ${all[*]}" >&2
    exit 2
fi

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz

cd "$root/fuzz"
mkdir -p logs
# The snapshot and image harnesses write a file (and a store) per input: keep them in memory.
if [ -z "${TMPDIR:-}" ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: $seconds s"
    # One process on one core (the machine is shared), at most 2 GiB of memory per input.
    # -jobs makes libFuzzer write its output to fuzz-0.log, which becomes logs/$t.log.
    rm -f fuzz-0.log
    touch "logs/$t.start"
    if ! nice -n 15 cargo +nightly fuzz run "$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -jobs=1 -workers=1 \
        -print_final_stats=1; then
        failed=1
    fi
    mv -f fuzz-0.log "logs/$t.log" 2>/dev/null || true
    grep -E ' cov: ' "logs/$t.log" | tail -n 1 || true
    grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec|ERROR|panicked' \
        "logs/$t.log" || true
    findings=$(find "artifacts/$t" -type f -newer "logs/$t.start")
    echo "corpus: $(find "corpus/$t" -type f | wc -l) files, $(du -sh "corpus/$t" | cut -f1)"
    if [ -n "$findings" ]; then
        echo "findings:"$'\n'"$findings"
        failed=1
    fi
done
exit "$failed"
