#!/usr/bin/env bash
# Snapshot benchmark (docs/benchmarks.md, "Snapshots"): snapshot and fork time of a 3-VM
# world (256 MiB per VM), and the size of a full snapshot file vs a child one virtual
# second later.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p explorer --test snapshot_world snapshot_benchmark -- --ignored --nocapture --test-threads 1 2>&1 \
  | grep -oE 'snapshot: .*'
