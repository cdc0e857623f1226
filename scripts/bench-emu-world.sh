#!/usr/bin/env bash
# A busy three-VM Debian world on `emu` (docs/benchmarks.md): examples/redis for 7 s of
# virtual time, seed 1, run by each given detvm binary in turn, N rounds interleaved so
# that every binary meets the same load. Prints one Markdown row per run: wall and CPU
# seconds (user + system), virtual time, wall per virtual second, trace hash, load.
# Usage:
#   scripts/bench-emu-world.sh ROUNDS LABEL=BINARY [LABEL=BINARY ...]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1
shift
compose=examples/redis/docker-compose.yaml
echo "| round | binary | wall (s) | CPU (s) | virtual (s) | wall per virtual s | trace | load |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  for pair in "$@"; do
    label=${pair%%=*}
    bin=${pair#*=}
    log=$(mktemp)
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f '%e %U %S' -o "$log.time" \
      nice -n 10 "$bin" run "$compose" --seed 1 --duration 7s >"$log" 2>&1 || true
    read -r wall user sys < <(tail -1 "$log.time")
    summary=$(grep -E '^run r[0-9a-f]+:' "$log" | tail -1)
    virt=$(sed -nE 's/.*virtual time ([0-9.]+)s.*/\1/p' <<<"$summary")
    trace=$(sed -nE 's/.*trace ([0-9a-f]+).*/\1/p' <<<"$summary")
    cpu=$(echo "$user + $sys" | bc)
    ratio=$( [[ -n $virt ]] && echo "scale=2; $wall / $virt" | bc || echo n/a)
    echo "| $round | $label | $wall | $cpu | ${virt:-n/a} | $ratio | \`${trace:-n/a}\` | $load |"
    rm -f "$log" "$log.time"
  done
done
