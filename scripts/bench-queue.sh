#!/usr/bin/env bash
# The work queue's load test (docs/scale-out.md): a throw-away PostgreSQL on loopback,
# then simulated campaigns of ITEMS items with N workers (threads, one connection each)
# for each N in WORKERS, with WORK_MS of simulated branch time per item.
#   scripts/bench-queue.sh [ITEMS=2000] [WORK_MS=0] [WORKERS="1 2 4 8 16 32"]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
items=${1:-2000}; work_ms=${2:-0}; workers=${3:-"1 2 4 8 16 32"}
cargo build --release -q -p detvm-service --bin detvm-queue-load
load="$root/target/release/detvm-queue-load"
tmp=$(mktemp -d); port=$((20000 + RANDOM % 20000))
"$root/scripts/test-services.sh" postgres "$tmp/pg" "$port" >"$tmp/pg.log" 2>&1 &
pg=$!
trap 'kill $pg 2>/dev/null; wait $pg 2>/dev/null; rm -rf "$tmp"' EXIT
url="postgres://postgres@127.0.0.1:$port/postgres"
for _ in $(seq 100); do
  /usr/lib/postgresql/*/bin/pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.2
done
for n in $workers; do
  c="bench-$n-$work_ms-$RANDOM"
  "$load" seed "$url" "$c" "$items" >/dev/null
  echo "workers $n work_ms $work_ms: $("$load" work "$url" "$c" "$items" "$n" "$work_ms" 30000)"
done
