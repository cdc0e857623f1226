#!/usr/bin/env bash
# Exploration benchmark (docs/benchmarks.md, "Exploration against a loop of runs"): wall
# time to the first failure on examples/replog (its rare bug), `detvm explore` against a
# loop of `detvm run --seed S` over consecutive seeds, with the same compose file, its
# duration and its swarm faults, the same wall budget and the same number of parallel
# jobs. N campaigns (seeds 1..N) and N loops (loop i starts at seed 1+1000*i), run in one
# go, interleaved: campaign 1, loop 1, campaign 2, loop 2, ...
#   scripts/bench-explore.sh [N [BUDGET_SECONDS]]      (defaults: 5 and 600)
# Environment: JOBS (default: the host's cores), DETVM (the binary, default this tree's,
# built), DETVM_HOME (default: a bench home under target/), OUT (a folder for the logs,
# default target/bench-explore).
# Each side stops at its first failure (a campaign is interrupted with SIGINT, so it
# still prints its report and where its time went) or at the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}
budget=${2:-600}
jobs=${JOBS:-$(nproc)}
compose=examples/replog/docker-compose.yaml
# DETVM: a detvm binary to measure (e.g. a copy, so rebuilding the tree meanwhile does
# not change it); by default this tree's, built first.
if [ -z "${DETVM:-}" ]; then
  cargo build --release -q -p detvm
fi
detvm=${DETVM:-$PWD/target/release/detvm}
export DETVM_HOME=${DETVM_HOME:-$PWD/target/bench-explore-home}
out=${OUT:-$PWD/target/bench-explore}
mkdir -p "$out"
DETVM=$detvm examples/replog/build-images.sh >/dev/null 2>&1
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

echo "host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $n of each side, budget ${budget}s, $jobs job(s)"
results=$out/results.tsv
printf 'side\tindex\tfirst_failure_s\twall_s\tbranches_or_runs\tdetail\n' >"$results"

# A campaign with seed $1: time to the first failing timeline, branches per minute, and
# the campaign's own line on where its threads' time went.
campaign() {
  local i=$1 err=$out/explore-$1.err start t="" pid
  start=$(now)
  setsid "$detvm" explore "$compose" --seed "$i" --budget "${budget}s" --jobs "$jobs" \
    >"$out/explore-$i.out" 2>"$err" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ -z "$t" ] && grep -q 'FAILED' "$err"; then
      t=$(since "$start")
      kill -INT "$pid" 2>/dev/null || true
    fi
    sleep 1
  done
  wait "$pid" || true
  local wall branches timing
  wall=$(since "$start")
  branches=$(grep -c ' from T' "$err" || true)
  timing=$(grep -o 'time over .*' "$err" | tail -1 || true)
  printf 'explore\t%s\t%s\t%.1f\t%s\t%s\n' "$i" "${t:-none}" "$wall" "$branches" "$timing" >>"$results"
  printf 'explore seed %-4s first failure %6s s, %4s branches in %6.1f s (%.1f/min); %s\n' \
    "$i" "${t:-none}" "$branches" "$wall" "$(echo "$branches * 60 / $wall" | bc -l)" "$timing"
}

# Loop $1: seeds 1+1000*$1, +1, +2, ... on $jobs workers, one run at a time each, until a
# run fails a property or the budget is spent.
loop() {
  local i=$1 base=$((1 + 1000 * $1)) log=$out/loop-$1.tsv start pids=() t=""
  : >"$log"
  start=$(now)
  for w in $(seq 0 $((jobs - 1))); do
    setsid bash -c '
      seed=$1
      while true; do
        s=$(date +%s.%N)
        rc=0; "$2" run "$3" --seed "$seed" >/dev/null 2>&1 || rc=$?
        printf "%s\t%s\t%s\n" "$(echo "$(date +%s.%N) - $4" | bc)" "$seed" "$rc" >>"$5"
        seed=$((seed + $6))
      done' _ $((base + w)) "$detvm" "$compose" "$start" "$log" "$jobs" &
    pids+=($!)
  done
  while true; do
    t=$(awk -F'\t' '$3 == 1 { print $1; exit }' "$log")
    [ -n "$t" ] && break
    [ "$(echo "$(since "$start") >= $budget" | bc)" = 1 ] && break
    sleep 1
  done
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  local wall runs seed
  wall=$(since "$start")
  runs=$(wc -l <"$log")
  seed=$(awk -F'\t' '$3 == 1 { print $2; exit }' "$log")
  printf 'loop\t%s\t%s\t%.1f\t%s\tfailing seed %s\n' "$i" "${t:-none}" "$wall" "$runs" "${seed:-none}" >>"$results"
  printf 'loop    %-4s first failure %6s s, %4s runs finished in %6.1f s (from seed %s; failing seed %s)\n' \
    "$i" "${t:-none}" "$runs" "$wall" "$base" "${seed:-none}"
}

for i in $(seq 1 "$n"); do
  campaign "$i"
  loop "$i"
done

# Median and spread; a side that found nothing within the budget counts as "> budget".
for side in explore loop; do
  awk -F'\t' -v side="$side" -v budget="$budget" '
    $1 == side { n++; v[n] = ($3 == "none") ? 1e18 : $3 }
    END {
      for (a = 2; a <= n; a++) for (b = a; b > 1 && v[b - 1] > v[b]; b--) { t = v[b]; v[b] = v[b - 1]; v[b - 1] = t }
      found = 0
      for (k = 1; k <= n; k++) if (v[k] < 1e18) found++
      m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      med = (m >= 1e17) ? "> " budget : sprintf("%.1f", m)
      lo = (found > 0) ? sprintf("%.1f", v[1]) : "-"
      hi = (found == n) ? sprintf("%.1f", v[n]) : "> " budget
      printf "%-7s time to first failure: median %s s, min %s s, max %s s; %d of %d found one\n",
        side, med, lo, hi, found, n
    }' "$results"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); logs in $out"
