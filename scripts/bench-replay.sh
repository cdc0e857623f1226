#!/usr/bin/env bash
# Replay benchmark (docs/benchmarks.md, "Replay"): the kv example run with snapshots, then
# the same moment replayed from the nearest snapshot and from boot, side by side.
#   scripts/bench-replay.sh [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-1}
cargo build --release -q -p detvm
export DETVM_HOME=${DETVM_HOME:-$PWD/target/bench-replay-home}
detvm=$PWD/target/release/detvm
DETVM=$detvm examples/kv/build-images.sh >/dev/null 2>&1
json=$(mktemp)
trap 'rm -f "$json"' EXIT
secs() { date +%s.%N; }
t0=$(secs)
"$detvm" run examples/kv/docker-compose.yaml --seed "$seed" --snapshot-at 10s,20s \
  --json "$json" 2>/tmp/bench-replay-run.log >/dev/null || true
t1=$(secs)
run=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["run"])' "$json")
dir=$DETVM_HOME/runs/$run/snapshots
echo "run $run (seed $seed): $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s wall with 2 snapshots"
for f in "$dir"/*.dsnap; do
  echo "  $(basename "$f"): $(du -k "$f" | cut -f1) KiB"
done
for moment in 12s 22s; do
  for mode in snapshot boot; do
    extra=(); [ "$mode" = boot ] && extra=(--from-start)
    s=$(secs)
    out=$("$detvm" replay "$run@$moment" "${extra[@]}" 2>/dev/null)
    e=$(secs)
    trace=$(echo "$out" | sed -n 's/.*trace hash //p')
    verdict=$(echo "$out" | tail -1 | sed 's/^ *//')
    printf '  replay @%-4s from %-8s %6.1f s wall  trace %s  (%s)\n' \
      "$moment" "$mode" "$(echo "$e - $s" | bc)" "$trace" "$verdict"
  done
done
