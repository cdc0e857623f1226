#!/usr/bin/env bash
# Time from VM start to the service's first output line (wall and virtual), for the
# busybox test image and the Debian etcd example, 5 boots each on the `emu` backend.
# Prints the BENCH lines; docs/benchmarks.md has the figures.
#
#   scripts/bench-agent.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p explorer --test agent_bench -- --ignored --nocapture --test-threads=1 \
  2>&1 | grep -oE '(BENCH|SKIP) .*'
