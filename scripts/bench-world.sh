#!/usr/bin/env bash
# The World's benchmark (docs/benchmarks.md, "World"): the wall/virtual ratio of an idle
# 3-VM world and the host cost per frame of a TCP transfer between two guests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p explorer --test world_linux world_benchmark -- --ignored --nocapture --test-threads 1 2>&1 \
  | grep -oE '(idle 3-VM|TCP transfer).*'
